"""Feature bank of normal training features and the k-NN scores computed against it.

The bank is a buffer, so it is saved in checkpoints and baked into exported graphs (ONNX,
OpenVINO); it resizes itself when a checkpoint with another bank size is loaded.

Compact banks (opt-in, applied when the bank is filled): ``max_size`` keeps at most that many
features per view, chosen by anomalib's k-center-greedy coreset (the features that cover the
others best: every dropped feature lies close to a kept one) or by seeded random subsampling;
``precision="float16"`` stores the bank in half precision (half the bytes in checkpoints and
exported models; the scores are computed in the queries' precision). The defaults keep every
feature in float32: the exact scorer.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from anomalib.models.components.base import DynamicBufferMixin
from anomalib.models.components.sampling import KCenterGreedy
from torch.nn import functional as F

from anomalib_firm.console import InputError

BankSampling = Literal["coreset", "random"]
BankPrecision = Literal["float32", "float16"]
_BANK_DTYPES = {"float32": torch.float32, "float16": torch.float16}


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


@dataclass(frozen=True)
class BankCompaction:
    """How a bank is compacted when it is filled (the defaults keep it exact).

    Attributes:
        max_size: Keep at most this many features per view (``None``: all).
        sampling: How ``max_size`` features are chosen: ``coreset`` (anomalib's k-center-greedy,
            per view, on the features as stored) or ``random`` (the same random images in every view).
        precision: ``float32`` or ``float16`` storage.
        seed: Seed of the random subsampling and of the coreset's start point and projection
            (the global random state is left untouched).
    """

    max_size: int | None = None
    sampling: BankSampling = "coreset"
    precision: BankPrecision = "float32"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_size is not None and self.max_size < 1:
            msg = f"The bank size limit must be a positive number of features (or None for all), got {self.max_size}."
            raise InputError(msg)
        if self.sampling not in ("coreset", "random"):
            msg = f"Unknown bank sampling {self.sampling!r}: use 'coreset' or 'random'."
            raise InputError(msg)
        if self.precision not in _BANK_DTYPES:
            msg = f"Unknown bank precision {self.precision!r}: use 'float32' or 'float16'."
            raise InputError(msg)

    def select(self, features: torch.Tensor) -> list[torch.Tensor]:
        """Sorted indices of the features kept in each view of ``features`` (views, N, D)."""
        count = features.shape[1]
        if self.max_size is None or count <= self.max_size:
            return [torch.arange(count, device=features.device)] * features.shape[0]
        if self.sampling == "random":
            generator = torch.Generator().manual_seed(self.seed)
            chosen = torch.randperm(count, generator=generator)[: self.max_size].sort().values.to(features.device)
            return [chosen] * features.shape[0]
        numpy_state = np.random.get_state()  # the coreset's projection draws from NumPy's global generator
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                np.random.seed(self.seed)
                return [self._coreset(view) for view in features.float()]
        finally:
            np.random.set_state(numpy_state)

    def _coreset(self, view: torch.Tensor) -> torch.Tensor:
        """k-center-greedy indices (anomalib's sampler) of ``max_size`` features of one view (N, D), sorted."""
        sampler = KCenterGreedy(view.cpu(), sampling_ratio=1.0)
        sampler.coreset_size = int(self.max_size or view.shape[0])  # exactly max_size, not int(N * ratio)
        with contextlib.redirect_stderr(io.StringIO()):  # its per-feature progress bar
            indices = sampler.select_coreset_idxs()
        return torch.tensor(indices, dtype=torch.long).unique().to(view.device)  # unique() also sorts

    def apply(self, features: torch.Tensor) -> torch.Tensor:
        """``features`` (views, N, D) subsampled and in the storage precision."""
        if self.max_size is not None and features.shape[1] > self.max_size:
            kept = self.select(features)
            features = torch.stack([view[indices] for view, indices in zip(features, kept, strict=True)])
        return features.to(_BANK_DTYPES[self.precision])


class FeatureBank(DynamicBufferMixin):
    """Features of the normal training images, one set per view (e.g. per rotation).

    A checkpoint's bank is loaded with its stored size and precision (a half-precision bank stays
    half precision, also in a model exported after loading).

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

    def update(self, features: torch.Tensor, compaction: BankCompaction | None = None) -> None:
        """Replace the bank by ``features`` (num_views, N, D), detached, compacted as ``compaction`` says (if given)."""
        views, _, dim = self.features.shape
        if features.ndim != 3 or features.shape[0] != views or features.shape[2] != dim:
            msg = f"Bank expects (views={views}, N, D={dim}), got {tuple(features.shape)}."
            raise ValueError(msg)
        features = features.detach().float()
        self.features = (compaction or BankCompaction()).apply(features).contiguous()

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        """Take the stored bank's precision before loading (the mixin takes its size)."""
        stored = state_dict.get(f"{prefix}features")
        if isinstance(stored, torch.Tensor) and stored.dtype != self.features.dtype:
            self.features = self.features.to(stored.dtype)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def _check_filled(self) -> None:
        if self.is_empty:
            msg = "The feature bank is empty: train the model (or load a trained checkpoint) before scoring."
            raise RuntimeError(msg)

    def cosine_topk(self, queries: torch.Tensor, k: int) -> torch.Tensor:
        """(views, Q, D) -> (views, Q) mean top-k cosine similarity against each view's bank."""
        self._check_filled()
        return cosine_topk_similarity(queries, self.features.to(queries.dtype), k)

    def squared_l2(self, queries: torch.Tensor, k: int) -> torch.Tensor:
        """(views, Q, D) -> (views, Q) summed squared L2 distance to the k nearest of each view's bank."""
        self._check_filled()
        return knn_squared_l2(queries, self.features.to(queries.dtype), k)
