"""PyTorch model of MSC: a pretrained encoder fine-tuned around a fixed centre, k-NN scoring.

The network is an ImageNet-pretrained backbone without its classifier (no projection head):
images in [0, 1] are normalised with the ImageNet mean/std inside the model, the pooled
features are L2-normalised. Training needs the fixed centre ``c`` (a buffer, saved in the
checkpoint); scoring needs the bank of normal training features (also a buffer, baked into
exported graphs). Both are filled by the Lightning model, see
:class:`anomalib_firm.models.image.msc.lightning_model.Msc`. Building the model reads no weight
file and downloads nothing: the pretrained weights are loaded by :meth:`MscModel.load_pretrained_weights`
(when training starts), unless a state dict such as a checkpoint's was loaded first.
"""

from __future__ import annotations

import os

import torch
from anomalib.data import InferenceBatch
from anomalib.models.components.base import DynamicBufferMixin
from torch.nn import functional as F

from anomalib_firm.models.components.backbones.networks import IMAGENET_MEAN, IMAGENET_STD
from anomalib_firm.models.components.backbones.pretrained import build_pretrained_backbone
from anomalib_firm.models.components.lifecycle.contract import ContrastiveNetwork
from anomalib_firm.models.components.scoring.feature_bank import FeatureBank
from anomalib_firm.models.components.views.augmentations import crop_and_resize
from anomalib_firm.models.image.msc.freezing import msc_frozen_modules

#: Evaluation view of the paper: resize to 256, centre crop 224.
MSC_EVAL_ZOOM = 256 / 224


def centre_box(zoom: float) -> torch.Tensor:
    """(1, 4) fractional box (x0, y0, width, height) that a resize by ``zoom`` then crop back keeps."""
    side = 1.0 / zoom
    return torch.tensor([[(1 - side) / 2, (1 - side) / 2, side, side]])


class MscModel(DynamicBufferMixin, ContrastiveNetwork):
    """MSC network, fixed centre and k-NN scorer.

    Training mode: ``forward(views)`` returns the L2-normalised features (B, D) of augmented
    views in [0, 1]; BatchNorm layers stay in eval mode (see
    :class:`~anomalib_firm.models.components.backbones.pretrained.PretrainedBackbone`).
    Eval mode: ``forward(images)`` returns ``InferenceBatch(pred_score)`` with the sum of the
    squared L2 distances of the normalised (un-shifted) features of the evaluation view to the
    ``num_neighbors`` nearest bank features (higher = more anomalous). The evaluation view is a
    centre crop by ``1 / eval_zoom`` resized back to the input size, i.e. the paper's "resize
    256, centre crop 224" for ``eval_zoom = 256 / 224``; the crop is a fixed affine resampling,
    so the graph has no branch on tensor values and exports to ONNX / OpenVINO.

    Args:
        backbone: ``resnet152`` (the paper), ``resnet18``, ``efficientnet_lite0`` or any name
            :func:`~anomalib_firm.models.components.backbones.pretrained.build_pretrained_backbone` accepts.
        weights: ``"imagenet"`` (download), ``"efficientnet-lite0-package"`` (offline), a path to a
            state dict file, or ``None`` / ``"random"`` (random initialisation, warns). Loaded by
            :meth:`load_pretrained_weights`, not here.
        frozen_modules: ``"msc"`` for the paper's rule (ResNet-152: ``conv1, bn1, layer1, layer2``
            frozen; ResNet-18: nothing frozen) or a list of sub-module names to freeze.
        num_neighbors: k of the k-NN score (2 in the paper).
        eval_zoom: Evaluation view: zoom by this factor, then centre crop back to the input size.
        mean: Input normalisation (RGB), applied inside the model.
        std: Input normalisation (RGB), applied inside the model.
    """

    mean: torch.Tensor
    std: torch.Tensor
    eval_box: torch.Tensor

    center: torch.Tensor

    def __init__(
        self,
        backbone: str = "resnet152",
        weights: str | os.PathLike[str] | None = "imagenet",
        frozen_modules: str | list[str] | tuple[str, ...] = "msc",
        num_neighbors: int = 2,
        eval_zoom: float = MSC_EVAL_ZOOM,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        if num_neighbors < 1:
            msg = f"num_neighbors must be >= 1, got {num_neighbors}."
            raise ValueError(msg)
        if eval_zoom < 1:
            msg = f"eval_zoom must be >= 1 (a centre crop), got {eval_zoom}."
            raise ValueError(msg)
        if isinstance(frozen_modules, str) and frozen_modules != "msc":
            msg = f"frozen_modules must be 'msc' or a list of sub-module names, got {frozen_modules!r}."
            raise ValueError(msg)
        frozen = msc_frozen_modules(backbone) if frozen_modules == "msc" else tuple(frozen_modules)
        self.backbone, self.feature_dim = build_pretrained_backbone(
            backbone, weights, frozen_modules=frozen, bn_eval=True, input_mean=mean, input_std=std, load_weights=False
        )
        self.num_neighbors = num_neighbors
        self.eval_zoom = float(eval_zoom)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("eval_box", centre_box(self.eval_zoom), persistent=False)
        # Empty until the Lightning model computes it before training; then (D,), saved in checkpoints.
        self.register_buffer("center", torch.empty(0))
        self.bank = FeatureBank(1, self.feature_dim)

    @property
    def weights_loaded(self) -> bool:
        """True once the network holds its weights: the pretrained ones, or a state dict's (a checkpoint)."""
        return self.backbone.weights_loaded

    def load_pretrained_weights(self) -> bool:
        """Load the pretrained weights (``weights``) unless the network already holds weights; True if it loaded.

        The only place where MSC reads a weight file or downloads; a no-op after a checkpoint was loaded.
        """
        return self.backbone.load_pretrained_weights()

    @property
    def has_center(self) -> bool:
        """True once the centre was computed (or loaded from a checkpoint)."""
        return self.center.numel() > 0

    def set_center(self, center: torch.Tensor) -> None:
        """Store the fixed centre (D,) (detached, float32, on the model's device)."""
        if center.shape != (self.feature_dim,):
            msg = f"The centre must have shape ({self.feature_dim},), got {tuple(center.shape)}."
            raise ValueError(msg)
        self.center = center.detach().to(device=self.mean.device, dtype=torch.float32).clone()

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] images -> network input (ImageNet normalisation by default)."""
        return (images - self.mean) / self.std

    def embed(self, views: torch.Tensor) -> torch.Tensor:
        """L2-normalised features (B, D) of views (B, 3, H, W) in [0, 1], as trained."""
        return F.normalize(self.backbone(self.normalize(views)), dim=-1)

    def evaluation_view(self, images: torch.Tensor) -> torch.Tensor:
        """Centre crop by ``1 / eval_zoom`` resized back to the input size: (B, 3, H, W) -> (B, 3, H, W)."""
        if self.eval_zoom == 1:
            return images
        return crop_and_resize(images, self.eval_box.expand(images.shape[0], 4), (images.shape[-2], images.shape[-1]))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised features (B, D) of the evaluation view: for the centre, the bank and the score."""
        return self.embed(self.evaluation_view(images))

    def score(self, images: torch.Tensor) -> torch.Tensor:
        """Sum of squared L2 distances to the k nearest normal features: (B, 3, H, W) -> (B,)."""
        return self.bank.squared_l2(self.features(images).unsqueeze(0), self.num_neighbors)[0]

    def forward(self, images: torch.Tensor) -> torch.Tensor | InferenceBatch:
        """Normalised features in training mode; anomaly scores in eval mode."""
        if self.training:
            return self.embed(images)
        return InferenceBatch(pred_score=self.score(images))
