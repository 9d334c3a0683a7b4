"""Lightning behaviour shared by FIRM, MSC and MCL: the mixin that composes it, and the training step.

All three train a network contrastively and then score test images against statistics of
the normal training images (a k-NN feature bank, or class-conditional Gaussians).
:class:`ContrastiveAnomalyMixin` owns that life cycle so each model only writes its loss step
(:meth:`~ContrastiveAnomalyMixin.training_loss`) and its scorer fit. It is composed of one part per
responsibility:

- here: the anomalib defaults (pre-processor: resize only, normalisation happens inside the torch
  model, so batched training augmentations work on [0, 1] images and exports include it;
  post-processor: anomalib's, with a score normalisation that keeps the raw scores' order
  (:mod:`..evaluation.post_processing`), so the image AUROC anomalib reports is the raw scores' AUROC; image
  metrics only), the checks before training (:mod:`.training_data`) and the
  training step, whose non-finite loss stops training with a clear error (checked one step late on
  an accelerator, so training never waits for the device);
- :mod:`.scorer_fitting`: the scorer is re-fitted on the normal training images at the start of
  validation, test and prediction whenever the network has trained since the last fit, after
  recomputing the BatchNorm statistics with the current weights (``bn_recalibration``,
  :mod:`..backbones.batch_norm`); under DDP it is fitted on rank 0 and broadcast, and evaluation counts every
  image once (:mod:`.distributed`);
- :mod:`.precision`: bf16 autocast and channels_last (``mixed_precision``) where the device computes
  bf16 natively (CUDA, or a CPU with AVX-512 BF16 / AMX); fp32 elsewhere. Scorers are fitted in fp32;
- :mod:`.checkpoint_state`: resuming (``--ckpt_path last.ckpt``) continues as the uninterrupted run
  (random streams, NaN guard, scorer state in the checkpoint; the model's name and network checked);
- :mod:`..export.compression`: quiet ONNX export; compressed OpenVINO exports keep the scorer in floating point.

What a model provides to this mixin, and what runs at fit start: :mod:`.contract`.

:class:`NormalBatch` (what ``fit_scorer`` receives) and :class:`TrainingLoss` (what ``training_loss``
returns) are importable from here.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from abc import abstractmethod
from typing import Any, NamedTuple

import torch
from anomalib import LearningType
from anomalib.data import Batch
from anomalib.metrics import AUROC, Evaluator
from anomalib.post_processing import PostProcessor
from anomalib.pre_processing import PreProcessor
from anomalib.visualization import ImageVisualizer
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.types import STEP_OUTPUT
from lightning.pytorch.utilities.warnings import PossibleUserWarning

from anomalib_firm.console import TrainingDivergedError, ignored_warnings
from anomalib_firm.models.components.evaluation.metrics import F1Score
from anomalib_firm.models.components.evaluation.post_processing import OrderPreservingPostProcessor
from anomalib_firm.models.components.export.compression import ScorerPreservingExportMixin
from anomalib_firm.models.components.export.resizing import model_pre_processor
from anomalib_firm.models.components.lifecycle import distributed
from anomalib_firm.models.components.lifecycle.argument_docs import (
    MODEL_ARGUMENTS_DOC,
    SHARED_ARGUMENTS,
    argument_entries,
    plain_text,
    with_arguments,
)
from anomalib_firm.models.components.lifecycle.checkpoint_state import RESUME_STATE_KEY, CheckpointStateMixin
from anomalib_firm.models.components.lifecycle.precision import MixedPrecisionMixin
from anomalib_firm.models.components.lifecycle.scorer_fitting import (
    BatchNormRecalibrationOption,
    NormalBatch,
    ScorerFittingMixin,
)
from anomalib_firm.models.components.lifecycle.training_data import (
    batch_images,
    cap_loader_workers,
    check_enough_images,
    verify_image_files,
)

logger = logging.getLogger(__name__)
#: Lightning's note before training (``fit_loop``): a pretrained encoder's BatchNorm layers are kept in eval mode
#: on purpose (MSC always; FIRM and MCL with ``freeze_batchnorm``).
EVAL_MODE_NOTE = r"Found \d+ module\(s\) in eval mode at the start of training"

__all__ = [
    "RESUME_STATE_KEY",
    "ContrastiveAnomalyMixin",
    "NormalBatch",
    "TrainingLoss",
    "mixin_arguments",
]


def mixin_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """The arguments of :class:`ContrastiveAnomalyMixin` among a model ``__init__``'s ``locals()`` (those it has).

    A model keeps its explicit signature (``--model.help`` lists every option from it) and hands these
    on with ``super().__init__(**mixin_arguments(locals()))``.
    """
    return {name: arguments[name] for name in _MIXIN_PARAMETERS if name in arguments}


class TrainingLoss(NamedTuple):
    """What a model's :meth:`ContrastiveAnomalyMixin.training_loss` returns.

    Attributes:
        loss: Scalar loss to minimise.
        metrics: Scalar tensors logged per step and epoch under their key (e.g. loss parts).
    """

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor]


class ContrastiveAnomalyMixin(
    CheckpointStateMixin, ScorerFittingMixin, MixedPrecisionMixin, ScorerPreservingExportMixin
):
    """Mixin for the contrastive models: anomalib defaults, training step, NaN guard (and the parts it composes).

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
            BatchNorm layers with the current weights instead of using the moving averages of the
            training batches (``False``): ``normal_images`` (or ``True``) on the clean normal
            training images (one pass, the views the scorer sees; needs
            :meth:`batchnorm_calibration_forward`), ``training_views`` on seeded training views of
            them (a few passes; needs :meth:`training_views`).
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
        bn_recalibration: BatchNormRecalibrationOption = False,
        max_epochs: int | None = None,
        val_every_n_epochs: int | None = None,
        pre_processor: PreProcessor | bool = True,
        post_processor: PostProcessor | bool = True,
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
        self._init_mixed_precision(mixed_precision)
        self.compile_step = compile_step
        self._compiled_training_loss: Any = None
        self._init_scorer_state(bn_recalibration)
        self.max_epochs = max_epochs
        self.val_every_n_epochs = val_every_n_epochs
        self._pending_loss: torch.Tensor | None = None  # last loss, checked one step late on an accelerator
        self._init_checkpoint_state()
        self._verified_datasets: set[int] = set()  # splits whose image files were opened (verify_image_files)
        self._eval_mode_note = contextlib.ExitStack()  # see on_fit_start

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Complete a model's docstring with the option descriptions ``--model.help`` reads from it.

        ``anomalib train --model FIRM --model.help FIRM`` reads the option descriptions from the
        docstring of the class it is given. A model (with an ``__init__`` of its own) that does not
        describe one of :data:`SHARED_ARGUMENTS` gets this mixin's description of it appended to
        its ``Args:``, so those are written once, here. An alias (``FIRM`` of ``Firm``: no
        ``__init__`` or ``Args:`` of its own) gets its parent's docstring too.
        """
        super().__init_subclass__(**kwargs)
        parent_doc = cls.__mro__[1].__doc__
        if "__init__" in vars(cls) and cls.__doc__:
            shared = argument_entries(ContrastiveAnomalyMixin.__doc__ or "") | argument_entries(MODEL_ARGUMENTS_DOC)
            parameters = inspect.signature(vars(cls)["__init__"]).parameters
            own = argument_entries(cls.__doc__)
            missing = [shared[name] for name in SHARED_ARGUMENTS if name in parameters and name not in own]
            cls.__doc__ = with_arguments(cls.__doc__, missing)
        elif "__init__" not in vars(cls) and parent_doc and "Args:" not in (cls.__doc__ or ""):
            summary, _, details = inspect.cleandoc(parent_doc).partition("\n\n")
            cls.__doc__ = f"{summary}\n\n{inspect.cleandoc(cls.__doc__ or '')}\n\n{details}"
        if cls.__doc__:  # the terminal shows it raw: no reStructuredText markup
            cls.__doc__ = plain_text(cls.__doc__)

    # ----------------------------------------------------------------- anomalib contract
    @classmethod
    def configure_pre_processor(cls, image_size: tuple[int, int] | None = None) -> PreProcessor:
        """Resize only, without antialiasing as in exported graphs (normalisation is part of the torch model)."""
        return model_pre_processor(image_size or (32, 32))

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
        from anomalib_firm.models.components.lifecycle.prediction_report import PredictionReport

        return [*super().configure_callbacks(), PredictionReport()]  # type: ignore[misc]  # anomalib's configure_callbacks returns a list

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
        return labels.to(device=batch_images(batch).device, dtype=torch.long)

    def setup(self, stage: str) -> None:
        """Before any loader is made: check the image files, cap the loader workers.

        Every image file must be readable as it is (:func:`verify_image_files`, for fit, validate and
        test); no more loader workers than usable cores (:func:`cap_loader_workers`).
        """
        super().setup(stage)
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and stage in ("fit", "validate", "test"):
            verify_image_files(datamodule, self._verified_datasets)
        cap_loader_workers(datamodule)

    # ----------------------------------------------------------------- training
    def on_fit_end(self) -> None:
        """Say once where this run's results went (the run folder, the checkpoint); warnings as before."""
        self._eval_mode_note.close()  # also when training stopped before it started
        super().on_fit_end()
        if not self.trainer.is_global_zero:
            return
        callback = self.trainer.checkpoint_callback
        checkpoint = getattr(callback, "best_model_path", "") or getattr(callback, "last_model_path", "")
        where = f"; checkpoint {checkpoint}" if checkpoint else ""
        logger.info(f"{self.name}: results in {self.trainer.default_root_dir}{where}")

    def on_fit_start(self) -> None:
        """Check the normal set before any step, then :meth:`prepare_training` (channels_last, compilation).

        Also silences, until training starts, Lightning's note that modules are in eval mode at the start
        of training: the frozen BatchNorm layers of a pretrained encoder are, by design.
        """
        self._eval_mode_note.close()
        self._eval_mode_note.enter_context(ignored_warnings([(PossibleUserWarning, EVAL_MODE_NOTE)]))
        try:
            datamodule = getattr(self.trainer, "datamodule", None)
            if datamodule is not None:
                check_enough_images(datamodule, self.min_train_images, self.name)
            self._note_fit_start()
            self.load_pretrained_weights()
            self.prepare_training()
        except BaseException:
            self._eval_mode_note.close()  # Lightning calls no on_fit_end after a failed start
            raise

    def on_train_start(self) -> None:
        """Lightning's eval-mode check has run: warnings as before."""
        self._eval_mode_note.close()
        super().on_train_start()

    def load_pretrained_weights(self) -> bool:
        """Load the network's pretrained weights (``weights``) unless it holds weights already; True if it loaded.

        The only place where a model reads a weight file or downloads: when training starts (every
        process) and before a scorer fit; a no-op for a randomly initialised network and after a
        checkpoint was loaded.
        """
        if not self.model.load_pretrained_weights():
            return False
        hparams = getattr(self, "hparams", {})
        logger.info(
            "%s: pretrained weights %r loaded into %r.", self.name, hparams.get("weights"), hparams.get("backbone")
        )
        return True

    def configure_model(self) -> None:
        """Before training: the network in channels_last under mixed precision, for the trainer's device.

        Lightning calls this before the strategy wraps the module (DDP builds its gradient buckets
        from the parameters' strides then: a later change of memory format made every rank warn
        "Grad strides do not match bucket view strides" once). Other stages keep the network as it is.
        """
        trainer = self._trainer
        if trainer is not None and trainer.state.fn == TrainerFn.FITTING:
            self.put_in_training_memory_format(trainer.strategy.root_device)

    def prepare_training(self) -> None:
        """Put the network in channels_last under mixed precision; compile the step when ``compile_step``.

        Called by ``on_fit_start`` (the network is in channels_last already from :meth:`configure_model`
        there); scripts that step the model without a Trainer call it once.
        """
        self.put_in_training_memory_format(self.device)
        if self.compile_step and self._compiled_training_loss is None:
            self._compiled_training_loss = torch.compile(self.training_loss)

    def compute_loss(self, batch: Batch) -> torch.Tensor:
        """The training loss of one batch (compiled when ``compile_step``); its metrics are logged."""
        step = self._compiled_training_loss or self.training_loss
        # anomalib's batches hold torchvision tv_tensors.Image, a tensor subclass whose __torch_function__
        # would split a compiled graph; the plain-tensor view costs nothing.
        images = torch.Tensor.as_subclass(batch_images(batch), torch.Tensor)
        loss, metrics = step(images, self.training_class_labels(batch))
        sync = distributed.world_size() > 1  # under DDP the epoch values are means over the ranks
        for name, value in metrics.items():
            self.log(name, value.detach(), on_step=True, on_epoch=True, batch_size=len(images), sync_dist=sync)
        return loss

    def training_step(self, batch: Batch, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """One contrastive step over the whole batch."""
        del args, kwargs
        loss = self.compute_loss(batch)
        self._guard_finite(loss)
        self._scorer_stale = True
        self.log(
            "train_loss",
            loss.detach(),
            on_step=True,
            on_epoch=True,
            prog_bar=True,
            batch_size=len(batch_images(batch)),
            sync_dist=distributed.world_size() > 1,
        )
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
            raise TrainingDivergedError(msg)

    def on_train_epoch_end(self) -> None:
        """Check the last loss of the epoch too."""
        if self._pending_loss is not None and not bool(torch.isfinite(self._pending_loss)):
            msg = f"{self.name}: the training loss became {self._pending_loss.item()} at the end of the epoch."
            raise TrainingDivergedError(msg)


_MIXIN_PARAMETERS = tuple(inspect.signature(ContrastiveAnomalyMixin.__init__).parameters)[1:]
