"""Lightning behaviour shared by FIRM, MSC and MCL.

All three train a network contrastively and then score test images against statistics of
the normal training images (a k-NN feature bank, or class-conditional Gaussians). This mixin owns
that life cycle so each model only writes its loss step and its scorer fit:

- pre-processor: resize only; normalisation happens inside the torch model, so batched
  training augmentations work on [0, 1] images and exports include the normalisation;
- post-processor: anomalib's, with a score normalisation that keeps the raw scores' order
  (:mod:`.post_processing`), so the image AUROC anomalib reports is the raw scores' AUROC;
- the scorer is re-fitted on the normal training images at the start of validation, test and
  prediction whenever the network has trained since the last fit (or nothing was fitted);
  with ``bn_recalibration`` the BatchNorm statistics are first recomputed on those images with
  the current weights ("precise BN"), so the scorer never sees statistics of older weights;
- a non-finite loss stops training with a clear error (checked one step late on an
  accelerator, so training never waits for the device);
- bf16 autocast and channels_last (``mixed_precision``) where the device computes bf16 natively
  (CUDA, or a CPU with AVX-512 BF16 / AMX); fp32 elsewhere. Scorers are fitted in fp32;
- several processes (DDP): the scorer is fitted on rank 0 and broadcast, evaluation counts every
  image once (the distributed sampler's repeats are dropped), see :mod:`.distributed`;
- resuming (``--ckpt_path last.ckpt``) continues as the uninterrupted run: checkpoints hold the
  random streams as they were after the epoch's last training step (every epoch starts from them, so
  validation and scorer fits never shift training's draws), the NaN guard and the scorer's state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
from abc import abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import torch
from anomalib import LearningType
from anomalib.data import Batch
from anomalib.metrics import AUROC, Evaluator, F1Score
from anomalib.pre_processing import PreProcessor
from anomalib.visualization import ImageVisualizer
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader, SequentialSampler
from torchvision.transforms.v2 import Resize

from anomalib_firm.models.components import distributed
from anomalib_firm.models.components.checkpoint_network import (
    CHECKPOINT_MODEL_KEY,
    match_checkpoint_network,
    model_name,
)
from anomalib_firm.models.components.compression import ScorerPreservingExportMixin
from anomalib_firm.models.components.post_processing import OrderPreservingPostProcessor
from anomalib_firm.models.components.precision import native_bf16
from anomalib_firm.models.components.random_state import capture_random_state, restore_random_state

logger = logging.getLogger(__name__)

#: Checkpoint key of the training state Lightning does not restore (random streams, NaN guard, scorer flag).
RESUME_STATE_KEY = "anomalib_firm_resume"


class NormalBatch(NamedTuple):
    """One batch of normal training images for :meth:`ContrastiveAnomalyMixin.fit_scorer`.

    Attributes:
        images: ``(B, 3, S, S)`` images in [0, 1], resized, on the model's device.
        class_labels: ``(B,)`` int64 classes in a model's labelled mode, else ``None``.
    """

    images: torch.Tensor
    class_labels: torch.Tensor | None = None


class TrainingLoss(NamedTuple):
    """What a model's :meth:`ContrastiveAnomalyMixin.training_loss` returns.

    Attributes:
        loss: Scalar loss to minimise.
        metrics: Scalar tensors logged per step and epoch under their key (e.g. loss parts).
    """

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor]


def verify_image_files(datamodule: Any) -> None:
    """Open every image file of the train/val/test splits once, before training starts.

    A corrupt or unreadable file would otherwise stop the run mid-way (or only at test time,
    after hours of training). Files with more than 8 bits per grey pixel (16-bit PNGs, say),
    which anomalib's image reader clips instead of scaling, are named in one warning. Data sets
    held in memory (``holds_images_in_memory``: read by our own readers) are skipped.

    Raises:
        ValueError: naming the first unreadable file and what to do.
    """
    import warnings

    from PIL import Image, UnidentifiedImageError

    from anomalib_firm.data.image_depth import high_depth_message, is_high_depth

    high_depth: dict[str, str] = {}  # path -> PIL mode
    for split in ("train_data", "val_data", "test_data"):
        dataset = getattr(datamodule, split, None)
        samples = getattr(dataset, "_samples", None)
        if samples is None or getattr(dataset, "holds_images_in_memory", False) or "image_path" not in samples:
            continue
        for path in samples["image_path"]:
            try:
                with Image.open(path) as image:
                    if is_high_depth(image.mode):
                        high_depth[str(path)] = image.mode
                    image.verify()
            except (OSError, UnidentifiedImageError, SyntaxError) as error:
                msg = (
                    f"Cannot read image file {path!r} ({split.removesuffix('_data')} split): {error}. "
                    "Remove or replace the file, then start again."
                )
                raise ValueError(msg) from error
    if high_depth:
        reader = f"{type(datamodule).__name__} (anomalib's read_image)"
        warnings.warn(high_depth_message(list(high_depth.items()), reader), UserWarning, stacklevel=2)


def _in_order(loader: Any) -> Any:
    """The same data set read in order, without dropping a last partial batch (other iterables: as given)."""
    if not isinstance(loader, DataLoader) or (isinstance(loader.sampler, SequentialSampler) and not loader.drop_last):
        return loader
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size or 1,
        shuffle=False,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
    )


class ContrastiveAnomalyMixin(ScorerPreservingExportMixin):
    """Mixin for the contrastive models: scorer fitting, NaN guard, mixed precision.

    Put it before :class:`AnomalibModule` (``class Firm(ContrastiveAnomalyMixin, AnomalibModule)``):
    anomalib's ``get_model("firm")`` only finds direct subclasses of ``AnomalibModule``.

    Args:
        image_size: Side of the square images the network sees (the pre-processor resizes).
        mixed_precision: Train under bf16 autocast with channels_last tensors where the device
            computes bf16 natively (CUDA; CPUs with AVX-512 BF16 or AMX); fp32 on other CPUs.
        compile_step: Compile the training step's hot path (rotations, views, network, loss:
            :meth:`training_loss`) with ``torch.compile`` at the start of training. Opt-in: the
            first steps wait for the compiler (minutes on a small CPU).
        bn_recalibration: Before every scorer fit, recompute the running statistics of the
            BatchNorm layers on the normal training images with the current weights (the
            cumulative mean over one pass, the views the scorer sees), instead of using the
            moving averages of the training batches. Needs :meth:`batchnorm_calibration_forward`.
        max_epochs: Optional trainer ``max_epochs`` imposed by the model (for ``anomalib
            benchmark``, whose trainer cannot be configured); ``None`` leaves the trainer's.
        val_every_n_epochs: Optional trainer ``check_val_every_n_epoch`` imposed likewise. Each
            validation refits the scorer on all normal images, so long schedules validate
            rarely; with ``max_epochs`` it must divide it (the last epoch is always validated).
        pre_processor: ``True``: resize to ``image_size`` (normalisation is part of the network, so
            exports include it); ``False``: none; or an anomalib ``PreProcessor``.
        post_processor: ``True``: anomalib's threshold and score normalisation, learnt on the
            validation split, keeping the raw scores' order; ``False``: none; or a post-processor.
        evaluator: ``True``: image AUROC and F1 on the test split (no pixel metrics: the model gives
            no anomaly map); ``False``: none; or an anomalib ``Evaluator``.
        visualizer: ``True``: anomalib's image visualizer (writes annotated test images);
            ``False``: none (faster); or an anomalib visualizer.
    """

    model: nn.Module
    #: Labelled multi-class mode (FIRM and MCL set it from their argument; MSC has none).
    use_class_labels: bool = False
    trainer: Any
    device: torch.device
    pre_processor: Any
    name: str
    global_step: int
    log: Any

    def __init__(
        self,
        image_size: int,
        mixed_precision: bool = True,
        compile_step: bool = False,
        bn_recalibration: bool = False,
        max_epochs: int | None = None,
        val_every_n_epochs: int | None = None,
        pre_processor: nn.Module | bool = True,
        post_processor: nn.Module | bool = True,
        evaluator: Any = True,
        visualizer: Any = True,
    ) -> None:
        if val_every_n_epochs is not None and (
            val_every_n_epochs < 1 or (max_epochs is not None and max_epochs % val_every_n_epochs)
        ):
            msg = (
                f"val_every_n_epochs={val_every_n_epochs} must be a positive divisor of max_epochs={max_epochs}: "
                "otherwise the last epoch is not validated and the threshold comes from an older network."
            )
            raise ValueError(msg)
        if pre_processor is True:
            pre_processor = self.configure_pre_processor((image_size, image_size))
        super().__init__(
            pre_processor=pre_processor,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
        )
        self.image_size = image_size
        self.mixed_precision = mixed_precision
        self._bf16_decided_for: str | None = None  # device type the bf16 decision below was made for
        self._bf16 = False
        self.compile_step = compile_step
        self._compiled_training_loss: Any = None
        self.bn_recalibration = bn_recalibration
        self.max_epochs = max_epochs
        self.val_every_n_epochs = val_every_n_epochs
        self._scorer_stale = False
        self._pending_loss: torch.Tensor | None = None
        # Random streams after the last training step of the latest epoch (restored when an epoch starts).
        self._epoch_end_random_state: dict[str, Any] | None = None
        self._epoch_end_step = -1
        self._random_state_restored = False  # set by a resume until the next training step
        self._resumed_from: str | None = None  # checkpoint this fit resumed from
        self._trained_until_step: int | None = None  # global step at the end of this process's fit

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """An alias (``FIRM`` of ``Firm``: no ``__init__`` or ``Args:`` of its own) gets its parent's docstring too.

        ``anomalib train --model FIRM --model.help FIRM`` reads the option descriptions from the
        docstring of the class it is given.
        """
        super().__init_subclass__(**kwargs)
        parent_doc = cls.__mro__[1].__doc__
        if "__init__" not in vars(cls) and parent_doc and "Args:" not in (cls.__doc__ or ""):
            summary, _, details = inspect.cleandoc(parent_doc).partition("\n\n")
            cls.__doc__ = f"{summary}\n\n{inspect.cleandoc(cls.__doc__ or '')}\n\n{details}"

    # ----------------------------------------------------------------- anomalib contract
    @classmethod
    def configure_pre_processor(cls, image_size: tuple[int, int] | None = None) -> PreProcessor:
        """Resize only (normalisation is part of the torch model)."""
        return PreProcessor(transform=Resize(image_size or (32, 32), antialias=True))

    @classmethod
    def configure_post_processor(cls) -> OrderPreservingPostProcessor:
        """The post-processor: anomalib's, normalising without ties, so the reported AUROC is the raw scores'."""
        return OrderPreservingPostProcessor()

    @staticmethod
    def configure_evaluator() -> Evaluator:
        """Image AUROC and F1 only: the models score images and give no anomaly map.

        anomalib's default adds pixel metrics, which nothing would update (each test then
        warned "``compute`` ... called before the ``update`` method").
        """
        return Evaluator(
            test_metrics=[
                AUROC(fields=["pred_score", "gt_label"], prefix="image_"),
                F1Score(fields=["pred_label", "gt_label"], prefix="image_"),
            ],
        )

    @classmethod
    def configure_visualizer(cls) -> ImageVisualizer:
        """The image visualizer of anomalib, also drawing the in-memory images of our data modules (same files).

        See :class:`anomalib_firm.data.visualization.InMemoryImageVisualizer`; nothing of anomalib is replaced.
        """
        from anomalib_firm.data.visualization import InMemoryImageVisualizer  # models need not load the data modules

        return InMemoryImageVisualizer()

    def configure_callbacks(self) -> list[Any]:
        """Callbacks: anomalib's (pre-/post-processor, evaluator, visualizer), then each prediction's score and label.

        See :class:`anomalib_firm.callbacks.PredictionReport` (console table and ``predictions.csv``).
        """
        from anomalib_firm.callbacks.prediction_report import PredictionReport

        return [*super().configure_callbacks(), PredictionReport()]  # type: ignore[misc]

    def to_onnx(
        self,
        export_root: Path | str,
        model_file_name: str = "model",
        input_size: tuple[int, int] | None = None,
        **kwargs: Any,
    ) -> Path:
        """ONNX export as anomalib's (also the first step of ``to_openvino``), quiet unless something fails.

        Exports at opset 18, the dynamo exporter's own (anomalib asks for 14, which the exporter
        cannot reach for these graphs: it logged a failed conversion with a traceback and kept 18),
        without the exporter's progress prints and INFO logs (:func:`anomalib_firm.console.quiet_export`).
        Both defaults yield to ``opset_version`` / ``verbose`` in ``kwargs``.
        """
        from anomalib_firm.console import quiet_export

        kwargs.setdefault("opset_version", 18)
        kwargs.setdefault("verbose", False)
        with quiet_export():
            return super().to_onnx(export_root, model_file_name, input_size, **kwargs)  # type: ignore[misc]

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """No sanity validation (the scorer needs a trained network); optional epoch settings."""
        arguments: dict[str, Any] = {"num_sanity_val_steps": 0}
        if self.max_epochs is not None:
            arguments["max_epochs"] = self.max_epochs
        if self.val_every_n_epochs is not None:
            arguments["check_val_every_n_epoch"] = self.val_every_n_epochs
        return arguments

    @property
    def learning_type(self) -> LearningType:
        """Trained on normal images only."""
        return LearningType.ONE_CLASS

    # ----------------------------------------------------------------- model-specific parts
    @abstractmethod
    def training_loss(self, images: torch.Tensor, class_labels: torch.Tensor | None) -> TrainingLoss:
        """Contrastive loss of one training batch and the metrics to log.

        The hot path: tensors in, tensors out, no logging or host synchronisation, so that
        ``compile_step`` can compile it as one graph.

        Args:
            images: ``(B, 3, S, S)`` normal training images, resized, in [0, 1].
            class_labels: ``(B,)`` int64 class of every image (labelled modes), from
                :meth:`training_class_labels`; ``None`` when the model does not use them.
        """

    def training_class_labels(self, batch: Batch) -> torch.Tensor | None:
        """The batch's ``class_label`` for :meth:`training_loss` in a labelled mode, else ``None``.

        Raises:
            ValueError: ``use_class_labels`` is set but the data module gives no class labels.
        """
        if not self.use_class_labels:
            return None
        labels = getattr(batch, "class_label", None)
        if labels is None:
            msg = (
                f"use_class_labels=True needs class labels in the batch: use one of anomalib_firm's one-vs-rest data "
                f"modules (e.g. FashionMNIST with several categories), or use_class_labels=False ({self.name})."
            )
            raise ValueError(msg)
        return labels.to(device=batch.image.device, dtype=torch.long)

    @abstractmethod
    def fit_scorer(self, batches: Iterator[NormalBatch]) -> None:
        """Fit the scorer (bank, Gaussians) on batches of normal training images, in eval mode, no gradients."""

    @abstractmethod
    def scorer_is_empty(self) -> bool:
        """True while the scorer holds no statistics (fresh model)."""

    @property
    def min_train_images(self) -> int:
        """Fewest normal training images the scorer can work with."""
        return 1

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the model's name and the training state a resumed run needs (all ``weights_only``-safe).

        The random state is the one after the last training step of the epoch (every rank's, under DDP),
        so a run resumed from an epoch-end checkpoint draws what the uninterrupted run draws.
        """
        super().on_save_checkpoint(checkpoint)  # type: ignore[misc]
        checkpoint[CHECKPOINT_MODEL_KEY] = model_name(self)  # type: ignore[arg-type]
        state = (
            self._epoch_end_random_state
            if self._epoch_end_random_state is not None and self._epoch_end_step == self.global_step
            else capture_random_state()
        )
        states = [state]
        if distributed.world_size() > 1:
            states = [None] * distributed.world_size()
            torch.distributed.all_gather_object(states, state)
        pending = self._pending_loss
        checkpoint[RESUME_STATE_KEY] = {
            "random_states": states,
            "pending_loss": None if pending is None else pending.detach().cpu(),
            "scorer_stale": self._scorer_stale,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Before a checkpoint's weights are loaded: fail if it is another model's or its network differs.

        See :func:`~anomalib_firm.models.components.checkpoint_network.match_checkpoint_network`
        (a model with ``rebuild_network`` is rebuilt instead when the user left those settings at their defaults).
        When resuming a fit, the random streams, NaN guard and scorer state are restored as well.
        """
        if self._keeps_weights_trained_here(checkpoint):
            return
        match_checkpoint_network(self, checkpoint)  # type: ignore[arg-type]
        resume = checkpoint.get(RESUME_STATE_KEY)
        if resume is not None and self._fitting():
            states = resume["random_states"]
            own = distributed.rank()
            self._epoch_end_random_state = states[own] if own < len(states) else states[0]
            self._epoch_end_step = int(checkpoint.get("global_step", -1))
            restore_random_state(self._epoch_end_random_state)  # before the first epoch's data iterator
            self._random_state_restored = True
            pending = resume["pending_loss"]
            self._pending_loss = None if pending is None else pending.to(self.device)
            self._scorer_stale = bool(resume["scorer_stale"])
        super().on_load_checkpoint(checkpoint)  # type: ignore[misc]

    def _fitting(self) -> bool:
        trainer = getattr(self, "_trainer", None)
        return trainer is not None and trainer.state.fn == "fit"

    def _keeps_weights_trained_here(self, checkpoint: dict[str, Any]) -> bool:
        """Testing after a resumed fit: keep the weights training ended with instead of the older checkpoint's.

        ``anomalib train --ckpt_path last.ckpt`` resumes from that checkpoint, then tests with the same
        ``ckpt_path``: that would score the weights of the epoch training resumed from, not the final ones
        (the uninterrupted run tests its final weights). The checkpoint's state dict and callback states
        (the post-processor's threshold) are replaced by the current ones, so Lightning's load keeps them.
        """
        trainer = getattr(self, "_trainer", None)
        if trainer is None or trainer.state.fn != "test" or self._resumed_from is None:
            return False
        if str(trainer.ckpt_path) != self._resumed_from or self._trained_until_step is None:
            return False
        if int(checkpoint.get("global_step", 0)) >= self._trained_until_step:
            return False
        logger.info(
            "%s: testing the weights training ended with (step %d), not those of %s (step %d) it resumed from.",
            self.name,
            self._trained_until_step,
            self._resumed_from,
            int(checkpoint.get("global_step", 0)),
        )
        checkpoint["state_dict"] = self.state_dict()  # type: ignore[attr-defined]
        if "callbacks" in checkpoint:
            checkpoint["callbacks"] = {callback.state_key: callback.state_dict() for callback in trainer.callbacks}
        return True

    def setup(self, stage: str) -> None:
        """Under DDP, keep the scorer's buffers (bank, Gaussians, centre) out of DDP's per-forward broadcast.

        They are fitted on rank 0 and broadcast once per fit (:meth:`fit_scorer_from_loader`); BatchNorm
        statistics keep DDP's usual broadcast.
        """
        super().setup(stage)  # type: ignore[misc]
        if distributed.world_size() > 1:
            batchnorm = {
                f"{name}.{buffer}"
                for name, layer in self.model.named_modules()
                if isinstance(layer, _BatchNorm)
                for buffer, _ in layer.named_buffers(recurse=False)
            }
            names = [f"model.{name}" for name, _ in self.model.named_buffers() if name not in batchnorm]
            distributed.exclude_from_ddp_broadcast(self, names)  # type: ignore[arg-type]

    # ----------------------------------------------------------------- training
    def on_fit_start(self) -> None:
        """Check the normal set before any step, then :meth:`prepare_training` (channels_last, compilation)."""
        datamodule = getattr(self.trainer, "datamodule", None)
        train_data = getattr(datamodule, "train_data", None)
        if train_data is not None:
            num_images = len(train_data)
            if num_images < self.min_train_images:
                msg = (
                    f"{self.name} needs at least {self.min_train_images} normal training images "
                    f"(see num_neighbors / the data module's category), but the training set has {num_images}."
                )
                raise ValueError(msg)
        if datamodule is not None:
            verify_image_files(datamodule)
        ckpt_path = getattr(self.trainer, "ckpt_path", None)
        self._resumed_from = str(ckpt_path) if ckpt_path else None
        self.prepare_training()

    def on_train_epoch_start(self) -> None:
        """Start from the random streams left by the previous epoch's last training step (not shifted by validation).

        Lightning creates the epoch's data iterator (the shuffling draws its seed) after this hook, except
        in the first epoch of a run, where it does so before; a resumed run therefore restores the
        checkpoint's streams when the checkpoint is loaded, and not again here.
        """
        if self._epoch_end_random_state is not None and not self._random_state_restored:
            restore_random_state(self._epoch_end_random_state)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """After the epoch's last training step: keep the random streams for the next epoch and checkpoints."""
        del outputs, batch
        self._random_state_restored = False
        loop = self.trainer.fit_loop.epoch_loop
        if loop.batch_progress.is_last_batch or batch_idx + 1 >= self.trainer.num_training_batches:
            self._epoch_end_random_state = capture_random_state()
            self._epoch_end_step = self.global_step

    def on_train_end(self) -> None:
        """Remember where this process's training ended (see :meth:`_keeps_weights_trained_here`)."""
        self._trained_until_step = self.global_step

    def prepare_training(self) -> None:
        """Put the network in channels_last under mixed precision; compile the step when ``compile_step``.

        Called by ``on_fit_start``; scripts that step the model without a Trainer call it once.
        """
        if self._use_mixed_precision:
            self.model.to(memory_format=torch.channels_last)
        if self.compile_step and self._compiled_training_loss is None:
            self._compiled_training_loss = torch.compile(self.training_loss)

    @property
    def _use_mixed_precision(self) -> bool:
        """bf16 training on this device: decided once per device type (the CPU check reads /proc/cpuinfo)."""
        device_type = self.device.type
        if self._bf16_decided_for != device_type:
            self._bf16 = self.mixed_precision and native_bf16(self.device)
            self._bf16_decided_for = device_type
        return self._bf16

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast when ``mixed_precision`` and the device computes bf16 natively; a no-op elsewhere."""
        if self._use_mixed_precision:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def as_input(self, images: torch.Tensor) -> torch.Tensor:
        """Images in the memory format the network was put in."""
        if self._use_mixed_precision:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def compute_loss(self, batch: Batch) -> torch.Tensor:
        """The training loss of one batch (compiled when ``compile_step``); its metrics are logged."""
        step = self._compiled_training_loss or self.training_loss
        # anomalib's batches hold torchvision tv_tensors.Image, a tensor subclass whose __torch_function__
        # would split a compiled graph; the plain-tensor view costs nothing.
        images = torch.Tensor.as_subclass(batch.image, torch.Tensor)
        loss, metrics = step(images, self.training_class_labels(batch))
        for name, value in metrics.items():
            self.log(name, value.detach(), on_step=True, on_epoch=True, batch_size=len(batch.image))
        return loss

    def training_step(self, batch: Batch, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """One contrastive step over the whole batch."""
        del args, kwargs
        loss = self.compute_loss(batch)
        self._guard_finite(loss)
        self._scorer_stale = True
        self.log("train_loss", loss.detach(), on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch.image))
        return {"loss": loss}

    def _guard_finite(self, loss: torch.Tensor) -> None:
        """Raise on a NaN/inf loss: at once on the CPU, one step late on an accelerator (no sync)."""
        pending, self._pending_loss = self._pending_loss, loss.detach()
        to_check = loss.detach() if loss.device.type == "cpu" else pending
        if to_check is not None and not bool(torch.isfinite(to_check)):
            msg = (
                f"{self.name}: the training loss became {to_check.item()} at step {self.global_step}. "
                "Lower the learning rate (model.lr), check the input images for NaN/inf values, "
                "or disable mixed_precision."
            )
            raise FloatingPointError(msg)

    def on_train_epoch_end(self) -> None:
        """Check the last loss of the epoch too."""
        if self._pending_loss is not None and not bool(torch.isfinite(self._pending_loss)):
            msg = f"{self.name}: the training loss became {self._pending_loss.item()} at the end of the epoch."
            raise FloatingPointError(msg)

    # ----------------------------------------------------------------- scoring
    def on_validation_start(self) -> None:
        """Fit the scorer on the trained network."""
        self._refresh_scorer()

    def on_test_start(self) -> None:
        """Fit the scorer if the network trained since (or nothing is fitted)."""
        self._refresh_scorer()

    def on_predict_start(self) -> None:
        """Fit the scorer if the network trained since (or nothing is fitted)."""
        self._refresh_scorer()

    def validation_step(self, batch: Batch, batch_idx: int = 0, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """Score the batch (the post-processor learns threshold and normalisation from it)."""
        del args
        batch = batch.update(**self.model(batch.image)._asdict())
        self._drop_distributed_repeats(batch, batch_idx, kwargs.get("dataloader_idx", 0))
        return batch

    def test_step(self, batch: Batch, batch_idx: int = 0, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """Score the batch (as anomalib's, plus: under DDP every test image counts once)."""
        return self.validation_step(batch, batch_idx, *args, **kwargs)

    def _drop_distributed_repeats(self, batch: Batch, batch_idx: int, dataloader_idx: int) -> None:
        """Under DDP, remove from ``batch`` (in place) the images the distributed sampler repeated.

        Lightning pads evaluation splits so that every rank gets as many images; the metrics and the
        post-processor's statistics, gathered over the ranks, then see every image exactly once.
        """
        trainer = getattr(self, "_trainer", None)
        if distributed.world_size() == 1 or trainer is None:
            return
        loaders = trainer.test_dataloaders if trainer.testing else trainer.val_dataloaders
        loader = loaders[dataloader_idx] if isinstance(loaders, list | tuple) else loaders
        keep = distributed.unpadded_mask(loader, batch_idx, len(batch.image))
        if keep is None:
            return
        changes = {}
        for field in dataclasses.fields(batch):  # type: ignore[arg-type]
            value = getattr(batch, field.name)
            if isinstance(value, torch.Tensor) and value.ndim > 0 and len(value) == len(keep):
                changes[field.name] = value[keep.to(value.device)]
            elif isinstance(value, list | tuple) and len(value) == len(keep):
                changes[field.name] = [item for item, kept in zip(value, keep.tolist(), strict=True) if kept]
        batch.update(**changes)

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

        Under DDP the fit runs on rank 0 alone (SyncBatchNorm layers recalibrate locally) and every
        buffer of the network (scorer, BatchNorm statistics) is then broadcast from rank 0.
        """
        loader = _in_order(loader)
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

    def recalibrate_batchnorm(self, loader: Any) -> int:
        """Recompute every BatchNorm layer's running statistics on a loader's images with the current weights.

        One pass in which only the BatchNorm layers are in train mode (with ``momentum=None``, the
        cumulative mean over the batches); other layers stay in eval mode and no gradient is kept.
        Layers the scorer's forward path does not reach keep their statistics. The momentum of
        every layer is restored afterwards.

        Returns:
            Number of BatchNorm layers recalibrated.
        """
        layers = [layer for layer in self.model.modules() if isinstance(layer, _BatchNorm)]
        if not layers:
            return 0
        was_training = self.model.training
        saved = {layer: (layer.momentum, layer.running_mean.clone(), layer.running_var.clone()) for layer in layers}
        self.model.eval()
        for layer in layers:
            layer.reset_running_stats()
            layer.momentum = None
            layer.train()
        with torch.no_grad():
            for batch in loader:
                self.batchnorm_calibration_forward(self._resized_on_device(batch.image))
        for layer, (momentum, mean, var) in saved.items():
            layer.momentum = momentum
            if int(layer.num_batches_tracked) == 0:  # not on the scorer's path: keep the old statistics
                layer.running_mean.copy_(mean)
                layer.running_var.copy_(var)
        self.model.train(was_training)
        return len(layers)

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
        return self.pre_processor.transform(images) if self.pre_processor is not None else images
