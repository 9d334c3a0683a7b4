"""MCL as an anomalib model.

Paper: "Masked Contrastive Learning for Anomaly Detection" (Cho, Seol, Lee, IJCAI 2021,
arXiv 2105.08793), with Self-Ensemble Inference (SEI).

Each training batch of B normal images becomes 4B items, every image in its four rotations
(rotations are shifted classes); each item gets two random views made on the model's device
(a flip of the base image, then crop, colour jitter and greyscale); the masked contrastive loss
pulls the two views of an item together, pushes other classes and, less, other rotations of
the same class away, barely pushes items of the same (class, rotation) apart, and attracts
each item to a random other item of its (class, rotation). After training, one Gaussian per
(class, rotation) is fitted on the head embeddings of the normal training images; a test image
scores by SEI over 8 views (see :mod:`.torch_model`).

Two modes:

- one-class (``use_class_labels=False``, default): every normal image is of one class
  (``C = 1``); the loss treats the four rotations as its classes (other rotations are full
  negatives, weight ``1 / t``; ``beta`` does not occur), one Gaussian per rotation is fitted;
  works with any data module, several normal categories are then pooled into one class.
  With the rotations as "same class, other rotation" (weight ``beta = 2``) the loss has no
  full-weight negative and collapses within a few steps (see the model README);
- labelled multi-class ID (``use_class_labels=True``): the data module gives each normal
  image's class (``class_label`` of :mod:`anomalib_firm.data`), labels are
  ``class + C x rotation``, one Gaussian per class and rotation; ``num_classes`` must equal the
  data module's ``num_normal_classes``.

Example:
    >>> from anomalib.engine import Engine
    >>> from anomalib_firm.data import FashionMNIST
    >>> from anomalib_firm.models import Mcl
    >>> engine = Engine(max_epochs=400)
    >>> engine.train(Mcl(), datamodule=FashionMNIST(category=0, train_batch_size=256))  # doctest: +SKIP
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
from anomalib_firm.models.components.optimisation.schedules import cosine_factor
from anomalib_firm.models.components.scoring.gaussian_scorer import CombineMethod, CovarianceEstimator
from anomalib_firm.models.components.views.rotations import NUM_ROTATIONS, expand_rotations, rotation_ids
from anomalib_firm.registry import cli_alias

from .loss import MaskedContrastiveLoss, MissingPartnerRule
from .torch_model import MclModel, flip_base_images
from .views import mcl_views

logger = logging.getLogger(__name__)

#: Batch size (in items) that the base learning rate refers to (``lr x items / 256``).
LR_REFERENCE_BATCH = 256


class Mcl(ContrastiveAnomalyMixin, AnomalibModule):
    """MCL: masked contrastive learning on rotation-shifted classes, SEI scoring.

    Args:
        backbone: Encoder: ``resnet18_cifar`` (default), ``resnet34_cifar`` (the paper's, slower and weaker
            on short runs: model README), a torchvision ResNet-family name (``resnet18``) or
            ``timm:<name>`` (the README lists the names).
        weights: ``None`` (default): a randomly initialised encoder, as in the paper. Or pretrained
            weights for ``backbone``: ``"efficientnet-lite0-package"`` (with ``backbone="efficientnet_lite0"``:
            the ImageNet weights of the installed package, offline), ``"imagenet"`` (download) or a state
            dict file; loaded when training or a scorer fit starts, never into a network restored from a
            checkpoint. Every layer trains unless ``frozen_modules`` (BatchNorm: see ``freeze_batchnorm``).
        freeze_batchnorm: Keep the pretrained encoder's BatchNorm layers in eval mode, their ImageNet
            statistics unchanged, as MSC does. ``None`` (default): on with pretrained ``weights``, off from
            scratch, or when a ``bn_recalibration`` is asked for. Statistics trained on one normal class
            take the pretrained features apart: from the Lite0 weights at 64 px, class 2 of Fashion-MNIST
            scores 0.942 before training with them frozen and 0.881 with training-view statistics (model
            README). Set it to ``False`` to let them train on a large, varied normal set.
        image_size: Side of the square network input: 32 for CIFAR-like data; 16 trains 4x faster on
            a CPU; larger for high-resolution parts (images are resized to it in every path).
        head_hidden_dim: Hidden width of the MLP head (2048, the paper's); smaller trains faster on a CPU.
        embedding_dim: Output dimension of the head (128); loss and score use it L2-normalised.
        use_class_labels: Labelled multi-class ID: the data module's ``class_label`` of every
            normal image is its class (needs one of anomalib_firm's data modules).
            ``False``: one normal class, the labels are the rotations.
        num_classes: Normal classes ``C`` of the labelled mode; must equal the data module's
            ``num_normal_classes`` (it sizes the stored Gaussians, so it is a constructor
            argument). Must be 1 in one-class mode.
        temperature: Loss temperature ``t`` (0.2, the paper's; 0.5 was worse on short runs).
        alpha: Loss weight of another item of the same class and rotation (0.05, the paper's); keep it
            small, it is what keeps items of one class apart.
        beta: Loss weight of the same class in another rotation (2.0; labelled mode only: in
            one-class mode the rotations are the loss's classes).
        spa_weight: Weight of the stochastic positive attraction term (1.0, the paper's); 0 turns the
            term off (an ablation).
        missing_partner: What the SPA term does for an item whose label no other item in the
            batch carries: ``exclude`` (default), ``own_view`` or ``raise``
            (see :class:`MaskedContrastiveLoss`).
        flip_probability: Probability of flipping the base image of a view (0.5); 0 when a mirrored part
            is an anomaly.
        crop_scale: Area range of the views' RandomResizedCrop (0.08 to 1, the paper's; 0.8 to 1 helped
            on 8x8 digits at 16 px and hurt on Fashion-MNIST, see the README).
        combine: How SEI combines the 8 views' distances: ``harmonic`` (the paper's), ``mean`` or
            ``min`` (for comparisons).
        covariance: Covariance estimator of the SEI Gaussians: ``ledoit_wolf`` (default) or ``oas``
            (shrinkage chosen from the data, for cells of tens to thousands of images), or ``sample``
            (the sample covariance, the ridge alone regularises it). Ledoit-Wolf scored 0.08-0.10
            higher at every epoch on a 91-image digits task, within noise on 300 images (README).
        ridge: Diagonal loading of the Gaussians' covariances, relative to their mean variance (1e-3); raise
            it if the scores of normal images are very spread with few training images.
        lr: Base SGD learning rate for a batch of 256 items; the optimiser uses
            ``lr x items / 256`` with ``items = 4 x images per step`` when ``scale_lr``.
        scale_lr: Apply the linear scaling rule above (paper: 0.3 x 1,024 / 256 = 1.2).
        momentum: SGD (Nesterov) momentum (0.9, the paper's).
        weight_decay: SGD weight decay (1e-6, the paper's); rarely worth changing.
        lr_floor: The cosine schedule ends at ``lr_floor x lr`` (the authors' ``eta_min``: 5e-4).
        bn_momentum: BatchNorm running-statistics momentum (PyTorch's convention); ``None`` keeps
            PyTorch's 0.1, as the authors' torchvision ResNet (0.9 scored lower on the digits task).
        bn_recalibration: The BatchNorm statistics the Gaussians are fitted with, recomputed with the
            current weights before every fit ("precise BN"). ``None`` (default): ``False`` when
            ``freeze_batchnorm`` keeps the pretrained ones, else ``training_views``: over
            seeded training views of the normal images (both flipped-rotated views, a few passes),
            the distribution the network trained on. ``normal_images`` (``True``): over the clean
            normal images. ``False``: the moving averages of
            training. The untrained network scores lower with recomputed statistics than with the
            initial mean 0 / variance 1, which make it an unnormalised random net close to raw
            pixels (README: measurements).
    """

    model: MclModel
    loss: MaskedContrastiveLoss

    def __init__(
        self,
        backbone: str = "resnet18_cifar",
        weights: str | None = None,
        freeze_batchnorm: bool | None = None,
        frozen_modules: list[str] | None = None,
        image_size: int = 32,
        head_hidden_dim: int = 2048,
        embedding_dim: int = 128,
        use_class_labels: bool = False,
        num_classes: int = 1,
        temperature: float = 0.2,
        alpha: float = 0.05,
        beta: float = 2.0,
        spa_weight: float = 1.0,
        missing_partner: MissingPartnerRule = "exclude",
        flip_probability: float = 0.5,
        crop_scale: tuple[float, float] = (0.08, 1.0),
        combine: CombineMethod = "harmonic",
        covariance: CovarianceEstimator = "ledoit_wolf",
        ridge: float = 1e-3,
        lr: float = 0.3,
        scale_lr: bool = True,
        momentum: float = 0.9,
        weight_decay: float = 1e-6,
        lr_floor: float = 5e-4,
        bn_momentum: float | None = None,
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
        if num_classes < 1:
            msg = f"num_classes must be >= 1, got {num_classes}."
            raise ValueError(msg)
        if not use_class_labels and num_classes != 1:
            msg = (
                f"num_classes={num_classes} needs use_class_labels=True (labelled multi-class mode); "
                "without class labels MCL has one normal class (num_classes=1)."
            )
            raise ValueError(msg)
        freeze_batchnorm, bn_recalibration = batchnorm_policy(weights, freeze_batchnorm, bn_recalibration)
        super().__init__(**mixin_arguments(locals()))
        self.model = MclModel(
            backbone=backbone,
            weights=weights,
            freeze_batchnorm=freeze_batchnorm,
            frozen_modules=frozen_modules or (),
            head_hidden_dim=head_hidden_dim,
            embedding_dim=embedding_dim,
            num_classes=num_classes,
            combine=combine,
            covariance=covariance,
            ridge=ridge,
        )
        set_batchnorm_momentum(self.model, bn_momentum)
        self.loss = MaskedContrastiveLoss(
            num_classes=num_classes if use_class_labels else NUM_ROTATIONS,
            temperature=temperature,
            alpha=alpha,
            beta=beta,
            spa_weight=spa_weight,
            missing_partner=missing_partner,
            gather_distributed=gather_distributed,
        )
        self.views = mcl_views(image_size, crop_scale=crop_scale)
        self.use_class_labels = use_class_labels
        self.num_classes = num_classes
        self.flip_probability = flip_probability
        self.lr = lr
        self.scale_lr = scale_lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.lr_floor = lr_floor

    # ----------------------------------------------------------------- checks
    @property
    def min_train_images(self) -> int:
        """Every (class, rotation) Gaussian needs a covariance: at least 2 images per class."""
        return 2 * self.num_classes

    def on_fit_start(self) -> None:
        """Check the normal classes against ``num_classes`` before the first step, then the mixin's checks."""
        self._check_normal_classes(getattr(self.trainer, "datamodule", None))
        super().on_fit_start()

    def _check_normal_classes(self, datamodule: Any) -> None:
        """Labelled mode: the data module must have ``num_classes`` normal classes, each with 2+ images."""
        if not self.use_class_labels or datamodule is None:
            return
        found = getattr(datamodule, "num_normal_classes", None)
        if found is None:
            msg = (
                f"use_class_labels=True needs a data module that labels the normal classes (one of anomalib_firm.data, "
                f"e.g. --data FashionMNIST --data.category '[0,1]'); {type(datamodule).__name__} does not."
            )
            raise ValueError(msg)
        if int(found) != self.num_classes:
            msg = (
                f"The data module has {found} normal classes ({getattr(datamodule, 'category', '?')}) but the model "
                f"was built for num_classes={self.num_classes}: set --model.num_classes {found}."
            )
            raise ValueError(msg)
        samples = getattr(getattr(datamodule, "train_data", None), "samples", None)
        if samples is not None and "class_label" in samples:
            counts = samples["class_label"].value_counts()
            short = {int(label): int(counts.get(label, 0)) for label in range(self.num_classes)}
            short = {label: count for label, count in short.items() if count < 2}
            if short:
                msg = (
                    f"MCL fits one Gaussian per (class, rotation) and needs at least 2 training images of every "
                    f"normal class; too few for class(es) {short} (class: images)."
                )
                raise ValueError(msg)

    # ----------------------------------------------------------------- training
    def configure_optimizers(self) -> OptimizerLRScheduler:
        """SGD (Nesterov) with the linear lr scaling rule and a per-step cosine decay to ``lr_floor x lr``."""
        total_steps = max(int(self.trainer.estimated_stepping_batches), 1)
        lr = self.learning_rate(items_per_step(self.trainer, "MCL")) if self.scale_lr else self.lr
        logger.info("MCL: SGD learning rate %.4g, %d steps of cosine decay.", lr, total_steps)
        optimizer = torch.optim.SGD(
            trainable_parameters(self.model),
            lr=lr,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            nesterov=True,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: cosine_factor(step, total_steps, self.lr_floor)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def learning_rate(self, items: int) -> float:
        """SGD learning rate at ``items`` items (4 x images) per step: ``lr x items / 256`` if ``scale_lr``."""
        return scaled_learning_rate(self.lr, items, LR_REFERENCE_BATCH) if self.scale_lr else self.lr

    def training_views(self, images: torch.Tensor) -> torch.Tensor:
        """Two on-device views of each of the 4 rotations, base flipped at random: (B, 3, H, W) -> (8B, 3, H, W)."""
        items, item_rotations = expand_rotations(images)
        both = torch.cat([items, items])
        return self.views(flip_base_images(both, item_rotations.repeat(2), self.flip_probability))

    def training_loss(self, images: torch.Tensor, class_labels: torch.Tensor | None) -> TrainingLoss:
        """All 4 rotations, two on-device views per item, masked contrastive loss (parts as metrics)."""
        item_rotations = rotation_ids(images.shape[0], images.device)
        labels = self.item_labels(class_labels, item_rotations)
        with self.autocast():
            view1, view2 = self.model(self.as_input(self.training_views(images))).float().chunk(2)
        parts = self.loss.forward_parts(view1, view2, labels)
        # Mean cosine over all (view 1, view 2) pairs = dot product of the two mean embeddings (O(N D), not
        # O(N^2 D)); near 1 means the embeddings collapsed onto one direction (see the model README).
        mean_cosine = view1.detach().mean(dim=0) @ view2.detach().mean(dim=0)
        metrics = {
            "train_ccm": parts.ccm,
            "train_spa": parts.spa,
            "train_unpaired": parts.num_unpaired.float(),
            "train_mean_cosine": mean_cosine,
        }
        return TrainingLoss(parts.loss, metrics)

    def item_labels(self, class_labels: torch.Tensor | None, item_rotations: torch.Tensor) -> torch.Tensor:
        """Loss labels of the ``4B`` items: ``class + C x rotation``; one-class: the rotation, as the loss's class.

        Args:
            class_labels: ``(B,)`` class of every image in labelled mode, ``None`` in one-class mode.
            item_rotations: ``(4B,)`` rotation of every item, rotation-major as from :func:`expand_rotations`.

        Returns:
            ``(4B,)`` int64 labels.
        """
        if class_labels is None:
            return item_rotations
        return class_labels.repeat(NUM_ROTATIONS) + self.num_classes * item_rotations

    # ----------------------------------------------------------------- scoring
    def scorer_is_empty(self) -> bool:
        """True until every (class, rotation) Gaussian was fitted."""
        return not self.model.gaussians.is_fitted

    def fit_scorer(self, batches: Iterator[NormalBatch]) -> None:
        """Fit the (class, rotation) Gaussians on the head embeddings of the normal training images.

        Every image in its 4 rotations, unaugmented (float32, no autocast). The class of an image is
        its ``class_labels`` entry in labelled mode, 0 in one-class mode (``class_labels`` ``None``).
        """
        # E.g. a test run without training; no check without a Trainer (scripts fitting the scorer directly).
        self._check_normal_classes(getattr(self._trainer, "datamodule", None))
        features, classes, rotations = [], [], []
        for batch_images, batch_labels in batches:
            batch_classes = (
                torch.zeros(len(batch_images), dtype=torch.long, device=batch_images.device)
                if batch_labels is None
                else batch_labels
            )
            rotation_features = self.model.rotation_features(batch_images)  # (4, B, D)
            features.append(rotation_features.reshape(-1, rotation_features.shape[-1]))
            rotations.append(rotation_ids(len(batch_images), batch_images.device))
            classes.append(batch_classes.repeat(NUM_ROTATIONS))
        if not features:
            msg = "MCL found no normal training images to fit its Gaussians on."
            raise ValueError(msg)
        gaussians = self.model.gaussians
        gaussians.fit(torch.cat(features), torch.cat(classes), torch.cat(rotations))
        logger.info(
            "MCL Gaussians fitted: %d classes x %d rotations, %d images.",
            gaussians.num_classes,
            gaussians.num_rotations,
            int(gaussians.counts[:, 0].sum()),
        )


MCL = cli_alias(Mcl)
