"""When and how the scorer (k-NN bank, class-conditional Gaussians) is fitted, and how images are scored.

The scorer is re-fitted on the normal training images at the start of validation, test and
prediction whenever the network has trained since the last fit (or nothing was fitted). With
``bn_recalibration`` the BatchNorm statistics are first recomputed on those images with the current
weights (:func:`~.batch_norm.recalibrate_batchnorm`), so the scorer never sees statistics of older
weights: over the clean images (``normal_images``) or over seeded training views of them
(``training_views``: the distribution the weights were trained on, averaged over many batches
instead of the moving average's last few). Under DDP the fit runs on rank 0 and its buffers are
broadcast, and evaluation counts every image once (see :mod:`.distributed`). Each model implements
:meth:`ScorerFittingMixin.fit_scorer` and :meth:`ScorerFittingMixin.scorer_is_empty`; everything else
is here.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from typing import Any, Literal, NamedTuple

import torch
from anomalib.data import Batch
from anomalib.pre_processing import PreProcessor
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch.utils.data import DataLoader, SequentialSampler

from anomalib_firm.console import InputError
from anomalib_firm.models.components.backbones import batch_norm
from anomalib_firm.models.components.backbones.encoders import has_pretrained_weights
from anomalib_firm.models.components.lifecycle import distributed
from anomalib_firm.models.components.lifecycle.contract import LifecycleHost
from anomalib_firm.models.components.lifecycle.random_state import preserved_random_state

#: Where the BatchNorm statistics the scorer is fitted with come from (the ``bn_recalibration`` option):
#: ``False`` the moving averages of training; ``normal_images`` recomputed on the clean normal
#: training images; ``training_views`` recomputed on seeded training views of them.
BatchNormRecalibration = Literal[False, "normal_images", "training_views"]
#: The option as models take it (``True`` = ``normal_images``).
BatchNormRecalibrationOption = bool | Literal["normal_images", "training_views"]

#: ``training_views`` recalibration reads at most this many passes over the normal images ...
CALIBRATION_PASSES = 4
#: ... and stops after the batch in which it has seen this many views (large sets: part of one pass).
CALIBRATION_VIEWS = 10_000


def batchnorm_recalibration_mode(value: BatchNormRecalibrationOption | str) -> BatchNormRecalibration:
    """The ``bn_recalibration`` option as a mode: ``True`` is ``normal_images`` (its meaning before the modes).

    Raises:
        ValueError: Any other value than a bool, ``normal_images`` or ``training_views``.
    """
    if value is True:
        return "normal_images"
    if value is False or value in ("normal_images", "training_views"):
        return value  # type: ignore[return-value]  # one of the literal modes, checked above
    msg = f"bn_recalibration={value!r}: use false, 'normal_images' (true) or 'training_views'."
    raise InputError(msg)


def batchnorm_policy(
    weights: str | None, freeze_batchnorm: bool | None, bn_recalibration: BatchNormRecalibrationOption | None
) -> tuple[bool, BatchNormRecalibrationOption]:
    """FIRM's and MCL's ``(freeze_batchnorm, bn_recalibration)`` with their defaults (``None``) resolved.

    ``freeze_batchnorm`` defaults to whether ``weights`` are pretrained: a pretrained encoder keeps its
    BatchNorm statistics (MSC's rule; trained on one normal class they take the pretrained features
    apart), unless a ``bn_recalibration`` is asked for (which recomputes them: so did every model
    before the option, and their checkpoints still load). ``bn_recalibration`` defaults to ``False``
    with frozen statistics and to ``training_views`` otherwise.

    Raises:
        InputError: ``freeze_batchnorm=True`` with a recalibration, which would replace the statistics.
    """
    if freeze_batchnorm is None:
        recalibrates = bn_recalibration is not None and bool(batchnorm_recalibration_mode(bn_recalibration))
        frozen = has_pretrained_weights(weights) and not recalibrates
    else:
        frozen = freeze_batchnorm
    if bn_recalibration is None:
        return frozen, False if frozen else "training_views"
    if frozen and batchnorm_recalibration_mode(bn_recalibration):
        msg = (
            f"bn_recalibration={bn_recalibration!r} would replace the pretrained BatchNorm statistics that "
            "freeze_batchnorm keeps: set bn_recalibration to false, or freeze_batchnorm to false to train them."
        )
        raise InputError(msg)
    return frozen, bn_recalibration


class NormalBatch(NamedTuple):
    """One batch of normal training images for :meth:`ScorerFittingMixin.fit_scorer`.

    Attributes:
        images: ``(B, 3, S, S)`` images in [0, 1], resized, on the model's device.
        class_labels: ``(B,)`` int64 classes in a model's labelled mode, else ``None``.
    """

    images: torch.Tensor
    class_labels: torch.Tensor | None = None


def in_order(loader: Any, batch_scale: int = 1) -> Any:
    """The same data set read in order, without dropping a last partial batch (other iterables: as given).

    ``batch_scale``: batches of ``batch_scale`` times the loader's (the global batch of that many processes).
    """
    if not isinstance(loader, DataLoader) or (
        isinstance(loader.sampler, SequentialSampler) and not loader.drop_last and batch_scale == 1
    ):
        return loader
    return DataLoader(
        loader.dataset,
        batch_size=(loader.batch_size or 1) * batch_scale,
        shuffle=False,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
    )


class ScorerFittingMixin(LifecycleHost):
    """Scorer life cycle of the contrastive models: refit when stale, BatchNorm recalibration, scoring steps.

    The host calls :meth:`_init_scorer_state` in its ``__init__`` and sets ``_scorer_stale`` after each
    training step; it gives ``training_class_labels`` (the labels its labelled mode uses).
    """

    def _init_scorer_state(self, bn_recalibration: BatchNormRecalibrationOption) -> None:
        self.bn_recalibration = batchnorm_recalibration_mode(bn_recalibration)
        self._scorer_stale = False  # the network trained since the last fit

    @abstractmethod
    def fit_scorer(self, batches: Iterator[NormalBatch]) -> None:
        """Fit the scorer (bank, Gaussians) on batches of normal training images, in eval mode, no gradients."""

    @abstractmethod
    def scorer_is_empty(self) -> bool:
        """True while the scorer holds no statistics (fresh model)."""

    @abstractmethod
    def training_class_labels(self, batch: Batch) -> torch.Tensor | None:
        """The batch's classes in the model's labelled mode, else ``None`` (given by the host)."""

    @property
    def min_train_images(self) -> int:
        """Fewest normal training images the scorer can work with."""
        return 1

    def setup(self, stage: str) -> None:
        """Under DDP, keep the scorer's buffers (bank, Gaussians, centre) out of DDP's per-forward broadcast.

        They are fitted on rank 0 and broadcast once per fit (:meth:`fit_scorer_from_loader`); BatchNorm
        statistics keep DDP's usual broadcast.
        """
        super().setup(stage)
        if distributed.world_size() > 1:
            batchnorm = batch_norm.batchnorm_buffer_names(self.model)
            names = [f"model.{name}" for name, _ in self.model.named_buffers() if name not in batchnorm]
            distributed.exclude_from_ddp_broadcast(self, names)

    # ----------------------------------------------------------------- refit when stale
    def on_validation_start(self) -> None:
        """Fit the scorer on the trained network."""
        self._refresh_scorer()

    def on_test_start(self) -> None:
        """Fit the scorer if the network trained since (or nothing is fitted)."""
        self._refresh_scorer()

    def on_predict_start(self) -> None:
        """Fit the scorer if the network trained since (or nothing is fitted)."""
        self._refresh_scorer()

    def _refresh_scorer(self) -> None:
        if not (self._scorer_stale or self.scorer_is_empty()):
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "train_dataloader"):
            msg = (
                f"{self.name} has no fitted scorer and no data module to fit it from: pass a data module "
                "with the normal training images, or load a trained checkpoint (ckpt_path)."
            )
            raise RuntimeError(msg)
        self.fit_scorer_from_loader(datamodule.train_dataloader())

    def fit_scorer_from_loader(self, loader: Any) -> None:
        """Fit the scorer on a loader of normal images with the current weights (eval mode, no gradients).

        With ``bn_recalibration`` the BatchNorm statistics are recomputed on the same images first.
        A shuffling loader is read in order instead (same images, batch size and collation), so the
        fit does not depend on, nor consume, the random stream, and no image is dropped.

        Under DDP the fit runs on rank 0 alone (SyncBatchNorm layers recalibrate locally), in batches of
        the global batch size (the loader's per-device batch times the number of processes: the
        recalibrated statistics average per-batch ones, so they are those of the single-device run with
        that batch), and every buffer of the network (scorer, BatchNorm statistics) is then broadcast from rank 0.
        """
        self.load_pretrained_weights()  # on every rank: parameters are not broadcast
        loader = in_order(loader, distributed.world_size())
        if distributed.rank() == 0:
            with distributed.local_batchnorm(self.model):
                self._fit_scorer_here(loader)
        distributed.broadcast_buffers(self.model)
        self._scorer_stale = False

    def _fit_scorer_here(self, loader: Any) -> None:
        """:meth:`fit_scorer_from_loader` in this process."""
        was_training = self.model.training
        if self.bn_recalibration:
            self.recalibrate_batchnorm(loader)
        self.model.eval()
        with torch.no_grad():
            self.fit_scorer(self._normal_images(loader))
        self.model.train(was_training)

    def batchnorm_calibration_forward(self, images: torch.Tensor) -> None:
        """Run the scorer's forward path on resized normal images ``(B, 3, H, W)`` (for :meth:`recalibrate_batchnorm`).

        Default: ``self.model.rotation_features(images)``, the features FIRM's bank and MCL's
        Gaussians are fitted on.
        """
        self.model.rotation_features(images)

    def training_views(self, images: torch.Tensor) -> torch.Tensor:
        """The network inputs a training step makes of resized normal images ``(B, 3, H, W)``: ``(V, 3, H, W)``.

        For ``bn_recalibration="training_views"``; the models with that mode override it (the
        views then run through ``self.model`` in train-mode order: encoder and head).
        """
        msg = f"{self.name} does not make training views: use bn_recalibration 'normal_images' or false."
        raise NotImplementedError(msg)

    def recalibrate_batchnorm(self, loader: Any) -> int:
        """Recompute every BatchNorm layer's running statistics on a loader's images with the current weights.

        See :func:`~anomalib_firm.models.components.backbones.batch_norm.recalibrate_batchnorm`. ``normal_images``
        (and ``True``): one pass of :meth:`batchnorm_calibration_forward` over the resized images.
        ``training_views``: :meth:`training_views` of the images through the network, up to
        ``CALIBRATION_PASSES`` passes, stopping once ``CALIBRATION_VIEWS`` views were seen (a set of
        more than 1,250 images: its first images in the loader's order), drawn from a fixed seed with
        the global random state restored afterwards (same statistics every fit; training's random
        stream untouched, so resumed runs stay identical). Cost per fit: at most ``CALIBRATION_VIEWS``
        forward passes without gradients, about the work of 13 training steps of 32 images.

        Returns:
            Number of BatchNorm layers recalibrated.
        """
        if self.bn_recalibration != "training_views":
            images = (self._resized_on_device(batch.image) for batch in loader)
            return batch_norm.recalibrate_batchnorm(self.model, images, self.batchnorm_calibration_forward)
        with preserved_random_state():
            torch.manual_seed(0)
            return batch_norm.recalibrate_batchnorm(self.model, self._training_view_batches(loader), self._embed_views)

    def _embed_views(self, views: torch.Tensor) -> None:
        """The training forward path (encoder and head, under the training precision) on a batch of views."""
        with self.autocast():
            self.model.embed(views)

    def _training_view_batches(self, loader: Any) -> Iterator[torch.Tensor]:
        """Batches of :meth:`training_views` of the loader's images for ``training_views`` recalibration."""
        seen = 0
        for _ in range(CALIBRATION_PASSES):
            for batch in loader:
                views = self.training_views(self._resized_on_device(batch.image))
                seen += views.shape[0]
                yield self.as_input(views)
                if seen >= CALIBRATION_VIEWS:
                    return

    # ----------------------------------------------------------------- scoring
    def validation_step(self, batch: Batch, batch_idx: int = 0, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """Score the batch (the post-processor learns threshold and normalisation from it)."""
        del args
        batch = batch.update(**self.model(batch.image)._asdict())
        self._drop_distributed_repeats(batch, batch_idx, kwargs.get("dataloader_idx", 0))
        return batch  # type: ignore[return-value]  # anomalib's steps return the batch to its callbacks

    def test_step(self, batch: Batch, batch_idx: int = 0, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """Score the batch (as anomalib's, plus: under DDP every test image counts once)."""
        return self.validation_step(batch, batch_idx, *args, **kwargs)

    def _drop_distributed_repeats(self, batch: Batch, batch_idx: int, dataloader_idx: int) -> None:
        """Under DDP, remove from ``batch`` (in place) the images the distributed sampler repeated."""
        trainer = getattr(self, "_trainer", None)
        if distributed.world_size() == 1 or trainer is None:
            return
        loaders = trainer.test_dataloaders if trainer.testing else trainer.val_dataloaders
        loader = loaders[dataloader_idx] if isinstance(loaders, list | tuple) else loaders
        distributed.drop_padding_repeats(batch, loader, batch_idx)

    def score_loader(self, loader: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw anomaly scores and labels of every image of a loader, on the CPU: ``(N,)`` float32, ``(N,)`` int64.

        Uses the fitted scorer as it is (fit it first); the post-processor's normalisation is not applied.
        """
        was_training = self.model.training
        self.model.eval()
        scores, labels = [], []
        with torch.no_grad():
            for batch in loader:
                scores.append(self.model(self._resized_on_device(batch.image)).pred_score.float().cpu())
                labels.append(torch.as_tensor(batch.gt_label).long().cpu())
        self.model.train(was_training)
        return torch.cat(scores), torch.cat(labels)

    def _normal_images(self, loader: Any) -> Iterator[NormalBatch]:
        """Resized normal training images (with classes where the model uses them), batch by batch, on the device."""
        for batch in loader:
            class_labels = self.training_class_labels(batch)
            yield NormalBatch(
                self._resized_on_device(batch.image), None if class_labels is None else class_labels.to(self.device)
            )

    def _resized_on_device(self, images: torch.Tensor) -> torch.Tensor:
        """A loader's images moved to the model's device and resized by the pre-processor."""
        images = images.to(self.device, non_blocking=True)
        transform = self.pre_processor.transform if isinstance(self.pre_processor, PreProcessor) else None
        return transform(images) if transform is not None else images
