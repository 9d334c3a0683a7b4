"""Feature bank of normal training features and the k-NN scores computed against it.

The bank is a buffer, so it is saved in checkpoints and baked into exported graphs (ONNX,
OpenVINO); it resizes itself when a checkpoint with another bank size is loaded.
"""

from __future__ import annotations

import torch
from anomalib.models.components.base import DynamicBufferMixin
from torch.nn import functional as F


def cosine_topk_similarity(queries: torch.Tensor, bank: torch.Tensor, k: int) -> torch.Tensor:
    """Mean of the ``k`` largest cosine similarities of each query to the bank.

    Args:
        queries: (..., Q, D) features (need not be normalised).
        bank: (..., N, D) features, broadcastable with ``queries`` in the leading dims.
        k: Number of neighbours (clipped to N).

    Returns:
        (..., Q) similarities in [-1, 1]; higher = more normal.
    """
    similarity = F.normalize(queries, dim=-1) @ F.normalize(bank, dim=-1).transpose(-1, -2)
    return similarity.topk(min(k, bank.shape[-2]), dim=-1).values.mean(dim=-1)


def knn_squared_l2(queries: torch.Tensor, bank: torch.Tensor, k: int) -> torch.Tensor:
    """Sum of the squared L2 distances from each query to its ``k`` nearest bank features.

    Args:
        queries: (..., Q, D).
        bank: (..., N, D).
        k: Number of neighbours (clipped to N).

    Returns:
        (..., Q) distances; higher = more anomalous.
    """
    distances = (
        queries.pow(2).sum(-1, keepdim=True) - 2 * queries @ bank.transpose(-1, -2) + bank.pow(2).sum(-1).unsqueeze(-2)
    ).clamp_min(0)
    return distances.topk(min(k, bank.shape[-2]), dim=-1, largest=False).values.sum(dim=-1)


class FeatureBank(DynamicBufferMixin):
    """Features of the normal training images, one set per view (e.g. per rotation).

    Args:
        num_views: Leading size of the bank (4 for the rotation-wise FIRM bank, 1 otherwise).
        dim: Feature dimension.
    """

    features: torch.Tensor

    def __init__(self, num_views: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("features", torch.empty(num_views, 0, dim))

    @property
    def is_empty(self) -> bool:
        """True until :meth:`update` stored features."""
        return self.features.shape[1] == 0

    @property
    def size(self) -> int:
        """Number of features per view."""
        return self.features.shape[1]

    def update(self, features: torch.Tensor) -> None:
        """Replace the bank by ``features`` (num_views, N, D), detached."""
        views, _, dim = self.features.shape
        if features.ndim != 3 or features.shape[0] != views or features.shape[2] != dim:
            msg = f"Bank expects (views={views}, N, D={dim}), got {tuple(features.shape)}."
            raise ValueError(msg)
        self.features = features.detach().to(self.features.dtype).contiguous()

    def _check_filled(self) -> None:
        if self.is_empty:
            msg = "The feature bank is empty: train the model (or load a trained checkpoint) before scoring."
            raise RuntimeError(msg)

    def cosine_topk(self, queries: torch.Tensor, k: int) -> torch.Tensor:
        """(views, Q, D) -> (views, Q) mean top-k cosine similarity against each view's bank."""
        self._check_filled()
        return cosine_topk_similarity(queries, self.features, k)

    def squared_l2(self, queries: torch.Tensor, k: int) -> torch.Tensor:
        """(views, Q, D) -> (views, Q) summed squared L2 distance to the k nearest of each view's bank."""
        self._check_filled()
        return knn_squared_l2(queries, self.features, k)

    forward = cosine_topk
