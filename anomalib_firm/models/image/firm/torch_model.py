"""PyTorch model of FIRM: encoder + projection head for training, rotation-wise k-NN scores for testing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from anomalib.data import InferenceBatch

from anomalib_firm.console import InputError
from anomalib_firm.models.components.backbones.encoders import build_encoder, load_encoder_weights
from anomalib_firm.models.components.backbones.heads import ProjectionHead
from anomalib_firm.models.components.lifecycle.contract import ContrastiveNetwork
from anomalib_firm.models.components.scoring.feature_bank import FeatureBank, cosine_topk_similarity
from anomalib_firm.models.components.views.augmentations import crop_and_resize, sample_crop_boxes
from anomalib_firm.models.components.views.rotations import NUM_ROTATIONS, expand_rotations

ScoreType = Literal["cos_k", "angled", "ensemble"]
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)


def centre_box(zoom: float) -> torch.Tensor:
    """(1, 4) fractional box of the centre crop that a resize by ``zoom`` then crop back keeps."""
    side = 1.0 / zoom
    return torch.tensor([[(1 - side) / 2, (1 - side) / 2, side, side]])


def compose_boxes(outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """Fractional boxes ``inner`` (N, 4), given inside the box ``outer`` (1, 4), as boxes of the whole image.

    Boxes are (x0, y0, width, height) fractions, as :func:`sample_crop_boxes` draws them.
    """
    x0, y0, width, height = outer[0]
    scale = torch.stack([width, height, width, height])
    return inner * scale + torch.stack([x0, y0, torch.zeros(()), torch.zeros(())])


class FirmModel(ContrastiveNetwork):
    """FIRM network and scorer.

    Training mode: ``forward(views)`` returns unit-norm embeddings (B, embedding_dim).
    Eval mode: ``forward(images)`` returns ``InferenceBatch(pred_score)`` with the negated
    k-NN cosine similarity of the encoder features to the bank (higher = more anomalous).

    Args:
        backbone: Encoder name (see :func:`build_encoder`).
        weights: ``None``: random initialisation (the paper); else the encoder's pretrained weights
            (see :func:`build_encoder`), loaded by :meth:`load_pretrained_weights`.
        freeze_batchnorm: Keep a pretrained encoder's BatchNorm layers in eval mode (their pretrained statistics).
        frozen_modules: Sub-modules of the encoder's network kept as loaded (see :func:`build_encoder`).
        head_hidden_dim: Hidden width of the projection head.
        head_layers: Linear layers in the head (2 by default; 8 in the authors' code).
        embedding_dim: Output dimension of the head.
        score: ``cos_k`` (upright image only), ``angled`` (mean over the 4 rotations, each
            against the bank of that rotation) or ``ensemble`` (angled, averaged over fixed crops).
        num_neighbors: k of the k-NN.
        num_crops: Crops of the ``ensemble`` score.
        crop_scale: Area range of the ensemble's square crops of the evaluation view (drawn once,
            seed 0, so scores are deterministic).
        eval_zoom: Evaluation view = resize by ``eval_zoom`` then centre crop back (36/32 in the paper).
        mean: Normalisation mean (RGB).
        std: Normalisation std (RGB).
    """

    mean: torch.Tensor
    std: torch.Tensor
    eval_box: torch.Tensor
    ensemble_boxes: torch.Tensor

    def __init__(
        self,
        backbone: str = "resnet18_cifar",
        weights: str | None = None,
        freeze_batchnorm: bool = False,
        frozen_modules: Sequence[str] = (),
        head_hidden_dim: int = 1024,
        head_layers: int = 2,
        embedding_dim: int = 128,
        score: ScoreType = "angled",
        num_neighbors: int = 5,
        num_crops: int = 10,
        crop_scale: tuple[float, float] = (0.55, 1.0),
        eval_zoom: float = 36 / 32,
        mean: tuple[float, float, float] = CIFAR_MEAN,
        std: tuple[float, float, float] = CIFAR_STD,
    ) -> None:
        super().__init__()
        if score not in ("cos_k", "angled", "ensemble"):
            msg = f"Unknown FIRM score {score!r}: use 'cos_k', 'angled' or 'ensemble'."
            raise InputError(msg)
        self.encoder, feature_dim = build_encoder(
            backbone,
            weights,
            input_mean=mean,
            input_std=std,
            freeze_batchnorm=freeze_batchnorm,
            frozen_modules=frozen_modules,
        )
        self.head = ProjectionHead(
            feature_dim,
            head_hidden_dim,
            embedding_dim,
            num_layers=head_layers,
            batch_norm=True,
            bias=False,
            final_batch_norm=True,
        )
        self.score_type = score
        self.num_neighbors = num_neighbors
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.eval_zoom = eval_zoom
        self.register_buffer("eval_box", centre_box(eval_zoom), persistent=False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            crops = sample_crop_boxes(num_crops, crop_scale, (1.0, 1.0), torch.empty(0))  # square, as the authors
        # The authors crop the evaluation view (resize 36, centre crop 32): compose both boxes into one.
        self.register_buffer("ensemble_boxes", compose_boxes(centre_box(eval_zoom), crops), persistent=False)
        self.bank = FeatureBank(NUM_ROTATIONS, feature_dim)

    def load_pretrained_weights(self) -> bool:
        """Load the encoder's pretrained weights (``weights``), unless it holds weights already; True if it loaded."""
        return load_encoder_weights(self.encoder)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] images -> network input."""
        return (images - self.mean) / self.std

    def embed(self, views: torch.Tensor) -> torch.Tensor:
        """Training embeddings (B, embedding_dim) of augmented views in [0, 1]."""
        return self.head(self.encoder(self.normalize(views)))

    def rotation_features(self, images: torch.Tensor, evaluation_view: bool = True) -> torch.Tensor:
        """Encoder features of the evaluation view of the 4 rotations: (B, 3, H, W) -> (4, B, D).

        ``evaluation_view=False`` for images that already are crops of it (the ensemble score).
        """
        if evaluation_view and self.eval_zoom != 1:
            images = crop_and_resize(
                images, self.eval_box.expand(images.shape[0], 4), (images.shape[-2], images.shape[-1])
            )
        rotated, _ = expand_rotations(images)
        features = self.encoder(self.normalize(rotated))
        return features.view(NUM_ROTATIONS, images.shape[0], -1)

    def similarity(self, images: torch.Tensor) -> torch.Tensor:
        """k-NN cosine similarity of each image to the normal bank: (B, 3, H, W) -> (B,), higher = more normal."""
        if self.score_type == "cos_k":
            upright = self.rotation_features(images)[:1]
            return cosine_topk_similarity(upright, self.bank.features[:1].to(upright.dtype), self.num_neighbors)[0]
        if self.score_type == "angled":
            return self.bank.cosine_topk(self.rotation_features(images), self.num_neighbors).mean(dim=0)
        num_crops, batch = self.ensemble_boxes.shape[0], images.shape[0]
        boxes = self.ensemble_boxes.repeat_interleave(batch, dim=0)
        crops = crop_and_resize(images.repeat(num_crops, 1, 1, 1), boxes, (images.shape[-2], images.shape[-1]))
        similarity = self.bank.cosine_topk(self.rotation_features(crops, evaluation_view=False), self.num_neighbors)
        return similarity.view(NUM_ROTATIONS, num_crops, batch).mean(dim=(0, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor | InferenceBatch:
        """Embeddings in training mode; anomaly scores (negated similarity) in eval mode."""
        if self.training:
            return self.embed(images)
        return InferenceBatch(pred_score=-self.similarity(images))
