"""PyTorch model of MCL: encoder + projection head, and the class/rotation Gaussians of SEI.

Training mode: ``forward(views)`` returns the unit-norm 128-d head embeddings the masked
contrastive loss works on. Eval mode: ``forward(images)`` returns the self-ensemble inference
(SEI) score of every image: the image in 8 views (4 rotations x {original, horizontally
flipped}), each view's head embedding compared with the Gaussian of every class in the view's
rotation, the 8 Mahalanobis distances combined per class (harmonic mean by default) and the
minimum over classes taken; higher = more anomalous.

No input normalisation: the paper and the authors' code feed the network images in [0, 1]
(their transforms end with ``ToTensor``, no ``Normalize``). Scoring uses the same normalised
head output as the loss, not the encoder features.

Export: the view layout is fixed (a constant buffer of rotation ids) and the Gaussians are
buffers, so the eval forward is a fixed graph (no branching on tensor values) and exports to
ONNX/OpenVINO with the statistics inside.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from anomalib.data import InferenceBatch

from anomalib_firm.models.components.backbones.encoders import build_encoder, load_encoder_weights
from anomalib_firm.models.components.backbones.heads import ProjectionHead
from anomalib_firm.models.components.lifecycle.contract import ContrastiveNetwork
from anomalib_firm.models.components.scoring.gaussian_scorer import (
    ClassRotationGaussians,
    CombineMethod,
    CovarianceEstimator,
)
from anomalib_firm.models.components.views.rotations import NUM_ROTATIONS, expand_rotations

#: Test views of SEI per image: every rotation, unflipped and horizontally flipped.
NUM_SEI_VIEWS = 2 * NUM_ROTATIONS


def flip_base_images(items: torch.Tensor, rotation_ids: torch.Tensor, probability: float) -> torch.Tensor:
    """Flip rotated items as if their *base* image had been flipped horizontally before rotating.

    A horizontal flip of the base image is, after a rotation by 90 or 270 degrees, a vertical
    flip of the rotated item (and stays horizontal after 0 or 180 degrees). Flipping the items
    after :func:`expand_rotations` with the axis chosen by the rotation gives the same images as
    flipping before, while every item draws its own flip.

    Args:
        items: ``(N, C, H, W)`` rotated images (square).
        rotation_ids: ``(N,)`` rotation of every item (0..3, quarter turns counter-clockwise).
        probability: Probability of flipping each item.

    Returns:
        ``(N, C, H, W)``: ``rot(flip_h(base))`` for the drawn items, ``rot(base)`` for the others.
    """
    flip = torch.rand(items.shape[0], device=items.device) < probability
    odd = (rotation_ids % 2 == 1).to(items.device)
    horizontal = (flip & ~odd).view(-1, 1, 1, 1)
    vertical = (flip & odd).view(-1, 1, 1, 1)
    return torch.where(horizontal, items.flip(-1), torch.where(vertical, items.flip(-2), items))


class MclModel(ContrastiveNetwork):
    """MCL network and SEI scorer.

    Args:
        backbone: Encoder (see :func:`build_encoder`): ``resnet18_cifar`` (default), ``resnet34_cifar`` (paper).
        weights: ``None``: random initialisation (the paper); else the encoder's pretrained weights
            (see :func:`build_encoder`), loaded by :meth:`load_pretrained_weights`.
        freeze_batchnorm: Keep a pretrained encoder's BatchNorm layers in eval mode (their pretrained statistics).
        frozen_modules: Sub-modules of the encoder's network kept as loaded (see :func:`build_encoder`).
        head_hidden_dim: Hidden width of the MLP head (2048).
        embedding_dim: Output dimension of the head (128).
        num_classes: ``C``, normal classes with a Gaussian each (1 in one-class mode).
        combine: SEI view combiner: ``harmonic`` (paper), ``mean`` or ``min``.
        covariance: Covariance estimator of the Gaussians: ``ledoit_wolf`` (default), ``oas`` or ``sample``.
        ridge: Relative diagonal loading of the covariances (see :class:`ClassRotationGaussians`).
    """

    sei_rotation_ids: torch.Tensor

    def __init__(
        self,
        backbone: str = "resnet18_cifar",
        weights: str | None = None,
        freeze_batchnorm: bool = False,
        frozen_modules: Sequence[str] = (),
        head_hidden_dim: int = 2048,
        embedding_dim: int = 128,
        num_classes: int = 1,
        combine: CombineMethod = "harmonic",
        covariance: CovarianceEstimator = "ledoit_wolf",
        ridge: float = 1e-3,
    ) -> None:
        super().__init__()
        # takes images in [0, 1]
        self.encoder, feature_dim = build_encoder(
            backbone, weights, freeze_batchnorm=freeze_batchnorm, frozen_modules=frozen_modules
        )
        # 512 -> 2048 -> ReLU -> 128 with biases and no BatchNorm, L2-normalised output.
        self.head = ProjectionHead(
            feature_dim, head_hidden_dim, embedding_dim, num_layers=2, batch_norm=False, bias=True
        )
        self.gaussians = ClassRotationGaussians(
            num_classes=num_classes,
            num_rotations=NUM_ROTATIONS,
            dim=embedding_dim,
            covariance=covariance,
            ridge=ridge,
            combine=combine,
        )
        # View v of SEI = flip (v % 2) of rotation (v // 2), see sei_features.
        self.register_buffer("sei_rotation_ids", torch.arange(NUM_ROTATIONS).repeat_interleave(2), persistent=False)

    def load_pretrained_weights(self) -> bool:
        """Load the encoder's pretrained weights (``weights``), unless it holds weights already; True if it loaded."""
        return load_encoder_weights(self.encoder)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-norm head embeddings: ``(B, 3, H, W)`` in [0, 1] -> ``(B, embedding_dim)``."""
        return self.head(self.encoder(images))

    def rotation_features(self, images: torch.Tensor) -> torch.Tensor:
        """Embeddings of the 4 rotations (no flip, no augmentation): ``(B, 3, H, W)`` -> ``(4, B, D)``.

        What the Gaussians are fitted on; item ``[r, i]`` is image ``i`` rotated ``r`` quarter turns.
        """
        rotated, _ = expand_rotations(images)
        return self.embed(rotated).view(NUM_ROTATIONS, images.shape[0], -1)

    def sei_features(self, images: torch.Tensor) -> torch.Tensor:
        """Embeddings of the 8 SEI views: ``(B, 3, H, W)`` -> ``(8, B, D)``.

        View ``2 r + f`` is image rotated ``r`` quarter turns, from the original (``f = 0``) or
        the horizontally flipped (``f = 1``) image; its rotation is ``sei_rotation_ids[v]``.
        """
        batch = images.shape[0]
        rotated, _ = expand_rotations(torch.cat([images, images.flip(-1)]))  # (4 * 2 * B): rotation, flip, image
        return self.embed(rotated).view(NUM_SEI_VIEWS, batch, -1)

    def forward(self, images: torch.Tensor) -> torch.Tensor | InferenceBatch:
        """Embeddings in training mode; SEI anomaly scores ``(B,)`` (higher = more anomalous) in eval mode."""
        if self.training:
            return self.embed(images)
        return InferenceBatch(pred_score=self.gaussians(self.sei_features(images), self.sei_rotation_ids))
