"""FIRM as an anomalib model.

Paper: "FIRM: Focused In-distribution Representation Modeling" (Lunardi, Banabila, Herzalla,
Andreoni, arXiv 2501.05130, ECAI 2025).

Each training batch of B normal images becomes 4B items (the image and its 90/180/270
degree rotations as synthetic outliers); each item gets two random views made on the
model's device; the FIRM loss pulls the inliers together and keeps the outliers apart.
After training, the encoder features of all normal training images (in the four rotations)
form the bank; a test image scores by its k-NN cosine similarity to it.

Example:
    >>> from anomalib.engine import Engine
    >>> from anomalib_firm.data import Digits
    >>> from anomalib_firm.models import Firm
    >>> engine = Engine(max_epochs=20)
    >>> engine.train(Firm(image_size=16), datamodule=Digits(category="0"))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import torch
from anomalib.models.components import AnomalibModule
from anomalib.post_processing import PostProcessor
from anomalib.pre_processing import PreProcessor
from lightning.pytorch.utilities.types import OptimizerLRScheduler
from torch import nn

from anomalib_firm.models.components.backbones.batch_norm import set_batchnorm_momentum
from anomalib_firm.models.components.backbones.freezing import trainable_parameters
from anomalib_firm.models.components.lifecycle.contrastive_mixin import (
    ContrastiveAnomalyMixin,
    NormalBatch,
    TrainingLoss,
    mixin_arguments,
)
from anomalib_firm.models.components.lifecycle.scorer_fitting import BatchNormRecalibrationOption, batchnorm_policy
from anomalib_firm.models.components.optimisation.learning_rate import items_per_step, scaled_learning_rate
from anomalib_firm.models.components.optimisation.schedules import OneCycleSchedule
from anomalib_firm.models.components.scoring.feature_bank import BankCompaction, BankPrecision, BankSampling
from anomalib_firm.models.components.views.rotations import NUM_ROTATIONS, expand_rotations, rotation_ids
from anomalib_firm.registry import cli_alias

from .loss import FirmLoss, LossLayout, LossObjective
from .torch_model import FirmModel, ScoreType
from .views import firm_views

logger = logging.getLogger(__name__)

#: Items per step that the base learning rate refers to: the authors' batch of 8 images x 4 rotations.
LR_REFERENCE_ITEMS = 32


class Firm(ContrastiveAnomalyMixin, AnomalibModule):
    """FIRM: contrastive training with rotation outliers, k-NN cosine scoring.

    Args:
        backbone: Encoder: ``resnet18_cifar`` (default), ``resnet34_cifar``, a torchvision ResNet-family name
            (``resnet18``) or ``timm:<name>`` (the README lists the names).
        weights: ``None`` (default): a randomly initialised encoder, as in the paper. Or pretrained
            weights for ``backbone``: ``"efficientnet-lite0-package"`` (with ``backbone="efficientnet_lite0"``:
            the ImageNet weights of the installed package, offline), ``"imagenet"`` (download) or a state
            dict file; loaded when training or a scorer fit starts, never into a network restored from a
            checkpoint. Every layer trains unless ``frozen_modules`` (BatchNorm: see ``freeze_batchnorm``).
        freeze_batchnorm: Keep the pretrained encoder's BatchNorm layers in eval mode, their ImageNet
            statistics unchanged, as MSC does. ``None`` (default): on with pretrained ``weights``, off from
            scratch, or when a ``bn_recalibration`` is asked for. Statistics trained on one normal class
            take the pretrained features apart: from the Lite0 weights at 64 px, class 2 of Fashion-MNIST
            scores 0.943 before training with them frozen and 0.891 with training-view statistics (model
            README). Set it to ``False`` to let them train on a large, varied normal set.
        image_size: Side of the square network input: 32 for CIFAR-like data; 16 trains 4x faster on
            a CPU; larger for high-resolution parts (images are resized to it in every path).
        head_hidden_dim: Hidden width of the projection head (1024); smaller (e.g. 256) trains faster on
            a CPU at little cost on small images.
        head_layers: Linear layers of the projection head: 2 (default, one hidden layer) or the
            authors' 8. Through the 8-layer head at initialisation the first steps push the encoder
            away from its good random features and short runs end below the untrained network;
            with 2 the same runs learn (model README, "Projection head depth").
        embedding_dim: Output dimension of the head the loss sees (128, the paper's); rarely worth changing.
        temperature: Loss temperature (0.2, the paper's); rarely worth changing.
        loss_layout: ``pairwise`` (the paper's formula) or ``concat`` (the authors' packaged loss, 2N x 2N);
            change it only to reproduce their code.
        loss: ``firm`` (default), or the paper's baselines on the same network, views, schedule
            and scoring: ``ntxent`` (own view the only positive) or ``supcon`` (Rot-SupCon: all
            items of the same rotation are positives).
        use_class_labels: Multi-class ID: inliers are positives only of inliers of the same
            class (needs a data module providing ``class_label``, e.g. several categories).
        crop_scale: Area range of the training views' square crops (0.25-1, the authors'); raise the lower
            bound when anomalies are small details that a crop would cut away.
        jitter: Colour-jitter strength of brightness, contrast, saturation and hue (0.4); lower it when
            colour itself tells normal from anomalous.
        blur_probability: Probability of the views' Gaussian blur, kernel 3 (0.75, the authors'); lower it
            when anomalies are fine texture.
        score: ``angled`` (default): the k-NN similarity averaged over the four rotations, each against
            the bank of its rotation; ``cos_k``: the upright image only (4x faster to score);
            ``ensemble``: ``angled`` over ``num_crops`` fixed crops (slower, sometimes steadier).
        num_neighbors: k of the k-NN score (5, the paper's); fewer for very small normal sets.
        num_crops: Fixed crops the ``ensemble`` score averages over (10); more is slower and steadier.
        eval_zoom: Test view = resize by this factor and centre crop back (36/32 in the paper).
        bank_size: Keep at most this many bank features per view (``None``: all, the exact scorer),
            chosen when the bank is fitted by ``bank_sampling``: ``coreset`` (anomalib's
            k-center-greedy) or ``random`` (seeded by ``bank_seed``). See the README's compact banks.
        bank_sampling: How ``bank_size`` picks the bank: ``coreset`` (default, anomalib's k-center
            greedy, covers the normal set) or ``random`` (seeded, faster to build).
        bank_precision: ``float32`` (default) or ``float16`` bank storage (half the bank's bytes in
            checkpoints and exported models).
        bank_seed: Seed of the bank subsampling (random subset; the coreset's start and projection).
        lr: Peak SGD learning rate of the one-cycle schedule (the authors' 0.01, for their 32 items
            per step: 8 images x 4 rotations); ``lr x items / 32`` when ``scale_lr``.
        scale_lr: Apply that linear scaling rule (0.04 at the data modules' 32 images per step).
            Off by default: on short Fashion-MNIST runs it helped one class of four and hurt three
            (model README).
        momentum: SGD momentum when ``momentum_range`` is ``None`` (0.9).
        momentum_range: ``(min, max)`` SGD momentum cycled against the one-cycle learning rate (the
            authors' ``OneCycleLR`` default, 0.95 -> 0.85 -> 0.95); ``None`` keeps ``momentum`` fixed.
        weight_decay: SGD weight decay (3e-4, the authors'); rarely worth changing.
        warmup_fraction: Share of the steps the one-cycle schedule warms up over (0.01); raise it (e.g. 0.1)
            if the first steps of a large-batch run diverge.
        bn_momentum: BatchNorm running-statistics momentum (PyTorch's convention, weight of the
            newest batch), what the bank uses with ``bn_recalibration=False``. The authors' 0.9 makes
            those statistics follow the trained weights; PyTorch's default 0.1 lags behind them for
            hundreds of steps (5 epochs on a small digits task: 0.977 untrained, 0.70 with 0.1).
        bn_recalibration: The BatchNorm statistics the bank is fitted with. ``None`` (default):
            ``False`` when ``freeze_batchnorm`` keeps the pretrained ones, else ``training_views``:
            recomputed with the current weights over seeded training views of the normal
            images (both views of all four rotations, a few passes), the distribution the network
            trained on averaged over many batches. ``False``: the moving averages of training
            (the authors' way; with momentum 0.9 the statistics of the last few batches, which swing
            with each batch on short runs). ``normal_images`` (``True``): recomputed on the clean
            normal images, which take the trained network apart on Fashion-MNIST. Measurements in
            the model README.
    """

    model: FirmModel

    def __init__(
        self,
        backbone: str = "resnet18_cifar",
        weights: str | None = None,
        freeze_batchnorm: bool | None = None,
        frozen_modules: list[str] | None = None,
        image_size: int = 32,
        head_hidden_dim: int = 1024,
        head_layers: int = 2,
        embedding_dim: int = 128,
        temperature: float = 0.2,
        loss_layout: LossLayout = "pairwise",
        loss: LossObjective = "firm",
        use_class_labels: bool = False,
        crop_scale: tuple[float, float] = (0.25, 1.0),
        jitter: float = 0.4,
        blur_probability: float = 0.75,
        score: ScoreType = "angled",
        num_neighbors: int = 5,
        num_crops: int = 10,
        eval_zoom: float = 36 / 32,
        bank_size: int | None = None,
        bank_sampling: BankSampling = "coreset",
        bank_precision: BankPrecision = "float32",
        bank_seed: int = 0,
        lr: float = 0.01,
        scale_lr: bool = False,
        momentum: float = 0.9,
        momentum_range: tuple[float, float] | None = (0.85, 0.95),
        weight_decay: float = 3e-4,
        warmup_fraction: float = 0.01,
        bn_momentum: float | None = 0.9,
        bn_recalibration: BatchNormRecalibrationOption | None = None,
        gather_distributed: bool = True,
        mixed_precision: bool = True,
        compile_step: bool = False,
        max_epochs: int | None = None,
        val_every_n_epochs: int | None = None,
        pre_processor: PreProcessor | bool = True,
        post_processor: PostProcessor | bool = True,
        evaluator: Any = True,
        visualizer: Any = True,
    ) -> None:
        freeze_batchnorm, bn_recalibration = batchnorm_policy(weights, freeze_batchnorm, bn_recalibration)
        super().__init__(**mixin_arguments(locals()))
        self.model = FirmModel(
            backbone=backbone,
            weights=weights,
            freeze_batchnorm=freeze_batchnorm,
            frozen_modules=frozen_modules or (),
            head_hidden_dim=head_hidden_dim,
            head_layers=head_layers,
            embedding_dim=embedding_dim,
            score=score,
            num_neighbors=num_neighbors,
            num_crops=num_crops,
            eval_zoom=eval_zoom,
        )
        set_batchnorm_momentum(self.model, bn_momentum)
        self.loss = FirmLoss(
            temperature=temperature, layout=loss_layout, objective=loss, gather_distributed=gather_distributed
        )
        self.views = firm_views(image_size, crop_scale=crop_scale, jitter=jitter, blur_probability=blur_probability)
        self.use_class_labels = use_class_labels
        self.num_neighbors = num_neighbors
        self.bank_compaction = BankCompaction(bank_size, bank_sampling, bank_precision, bank_seed)
        self.lr = lr
        self.scale_lr = scale_lr
        self.momentum = momentum
        self.momentum_range = (momentum_range[0], momentum_range[1]) if momentum_range is not None else None
        self.weight_decay = weight_decay
        self.warmup_fraction = warmup_fraction

    @property
    def min_train_images(self) -> int:
        """The k-NN needs at least k normal images."""
        return self.num_neighbors

    def configure_optimizers(self) -> OptimizerLRScheduler:
        """SGD with a per-step one-cycle schedule (1% cosine warm-up, cosine decay; momentum cycled against it)."""
        lr = self.learning_rate(items_per_step(self.trainer, "FIRM")) if self.scale_lr else self.lr
        total_steps = max(int(self.trainer.estimated_stepping_batches), 1)
        logger.info("FIRM: SGD peak learning rate %.4g, %d steps of one-cycle schedule.", lr, total_steps)
        optimizer = torch.optim.SGD(
            trainable_parameters(self.model), lr=lr, momentum=self.momentum, weight_decay=self.weight_decay
        )
        scheduler = OneCycleSchedule(optimizer, total_steps, self.warmup_fraction, self.momentum_range)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def learning_rate(self, items: int) -> float:
        """Peak SGD learning rate at ``items`` items (4 x images) per step: ``lr x items / 32`` if ``scale_lr``."""
        return scaled_learning_rate(self.lr, items, LR_REFERENCE_ITEMS) if self.scale_lr else self.lr

    def training_views(self, images: torch.Tensor) -> torch.Tensor:
        """Two on-device views of each of the 4 rotations: (B, 3, H, W) -> (8B, 3, H, W), view-major, rotation-major."""
        items, _ = expand_rotations(images)
        return torch.cat([self.views(items), self.views(items)])

    def training_loss(self, images: torch.Tensor, class_labels: torch.Tensor | None) -> TrainingLoss:
        """Rotation outliers, two on-device views per item, FIRM loss (the unrotated items are the inliers)."""
        item_rotations = rotation_ids(images.shape[0], images.device)
        item_classes = None if class_labels is None else class_labels.repeat(NUM_ROTATIONS)
        with self.autocast():
            view1, view2 = self.model(self.as_input(self.training_views(images))).float().chunk(2)
        return TrainingLoss(self.loss(view1, view2, item_rotations == 0, item_classes, item_rotations), {})

    def scorer_is_empty(self) -> bool:
        """True until the bank was built."""
        return self.model.bank.is_empty

    def fit_scorer(self, batches: Iterator[NormalBatch]) -> None:
        """Bank = normalised encoder features of every normal training image in the 4 rotations."""
        features = [nn.functional.normalize(self.model.rotation_features(batch.images), dim=-1) for batch in batches]
        self.model.bank.update(torch.cat(features, dim=1), self.bank_compaction)
        logger.info("FIRM bank built from %d normal images.", self.model.bank.size)


FIRM = cli_alias(Firm)
