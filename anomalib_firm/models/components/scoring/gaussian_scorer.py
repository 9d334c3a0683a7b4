"""One Gaussian per (class, rotation) and the self-ensemble inference (SEI) score of MCL.

MCL (Cho, Seol and Lee, IJCAI 2021) scores a test image from several views of it (the four
rotations, each also flipped): every view ``v`` with rotation ``r_v`` is compared with the
Gaussian of every class ``c`` *in that rotation*, ``D_vc = Mahalanobis(f_v; mu_{c, r_v},
Sigma_{c, r_v})``; the views are combined per class (harmonic mean in the paper) and the score
is the minimum over classes, higher = more anomalous (anomalib's convention).

Distance: the plain Mahalanobis distance ``sqrt(d^T P d)``, as in the paper and the authors'
code (which takes the square root before combining). The choice matters for the harmonic and
arithmetic combiners (a mean of distances ranks differently from a mean of squared distances);
the minimum over classes and the ``"min"`` combiner do not care. ``squared=True`` gives the
squared distance instead.

Export: the means and the precision matrices are buffers with shapes fixed at construction, so
they travel in checkpoints and into an ONNX/OpenVINO graph as constants; inference is
``index_select`` + ``einsum`` + elementwise ops only (the inverse is computed once, at fit time,
in float64 on the CPU).

Covariance: a shrinkage estimator chosen from the data per cell by default (Ledoit-Wolf; OAS, or
the plain sample covariance; see :func:`estimate_covariance`): a cell holds tens of images on a
small data set and thousands on CIFAR-10, and a fixed ridge cannot suit both. On MCL's learning
curves (trained networks, BatchNorm recalibrated) Ledoit-Wolf scored 0.08-0.10 higher than the
sample covariance + ridge at every epoch with 91 images per cell and within noise with 300 (the
MCL README has the figures).

Ridge: the covariance of a cell then gets ``lambda * I`` before inversion, with ``lambda = ridge *
trace(Sigma) / D`` (``relative_ridge=True``, default ``ridge = 1e-3``), i.e. 0.1 % of the mean
per-dimension variance. Unit-norm 128-d features have a total variance of at most 1 (per
dimension ~1e-3 for a tight class cluster), so an absolute ridge has no natural value, while a
relative one is independent of how tight the clusters got during training. It keeps the
condition number of the stored precision below about ``D / ridge`` (~1e5), where the float32
quadratic form at inference is still accurate to ~1e-3 relative, and makes cells with fewer
samples than dimensions (small data sets: the covariance is then singular) usable. The authors
add an absolute 1e-9 in float64; ``relative_ridge=False, ridge=1e-9`` reproduces that, but needs
the module in float64 (``.double()``) to be accurate.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from anomalib_firm.console import InputError

CombineMethod = Literal["harmonic", "mean", "min"]
_COMBINE_METHODS: tuple[str, ...] = ("harmonic", "mean", "min")
CovarianceEstimator = Literal["ledoit_wolf", "oas", "sample"]
_COVARIANCE_ESTIMATORS: tuple[str, ...] = ("ledoit_wolf", "oas", "sample")

#: Distances are clamped below at this value before the harmonic mean takes their inverses.
_HARMONIC_FLOOR = 1e-12


def estimate_covariance(
    samples: torch.Tensor, estimator: CovarianceEstimator = "ledoit_wolf"
) -> tuple[torch.Tensor, float]:
    """Covariance of ``(N, D)`` samples, shrunk towards ``mu I`` by an amount chosen from the data.

    * ``"ledoit_wolf"``: Ledoit and Wolf (2004), the shrinkage minimising the expected Frobenius
      error; the same estimate as ``sklearn.covariance.LedoitWolf().fit(samples).covariance_``.
    * ``"oas"``: Chen et al. (2010), Oracle Approximating Shrinkage, as ``sklearn.covariance.OAS``.
    * ``"sample"``: the unbiased sample covariance (divides by ``N - 1``, as ``np.cov``), no shrinkage.

    ``mu`` is the mean eigenvalue ``trace(S) / D`` of the empirical (``1 / N``) covariance ``S``; the
    result is ``(1 - s) S + s mu I``. With tens of samples in 128 dimensions the sample covariance
    is singular and ``s`` comes out large; with thousands it goes to 0.

    Args:
        samples: ``(N, D)``, N >= 2. Computed in the samples' dtype (use float64).
        estimator: One of the above.

    Returns:
        ``(D, D)`` covariance and the shrinkage ``s`` (0 for ``"sample"``).
    """
    num, dim = samples.shape
    centred = samples - samples.mean(dim=0)
    if estimator == "sample":
        return centred.T @ centred / (num - 1), 0.0
    empirical = centred.T @ centred / num
    mu = float(torch.diagonal(empirical).sum()) / dim
    if estimator == "ledoit_wolf":
        squared = centred**2
        # Mean squared deviation of the per-sample outer products from S, over the samples (beta)
        # and distance of S from mu I (delta), both per dimension.
        beta = float((squared.T @ squared).sum() / num - (empirical**2).sum()) / (dim * num)
        delta = float(((empirical - mu * torch.eye(dim, dtype=samples.dtype, device=samples.device)) ** 2).sum()) / dim
        beta = min(beta, delta)
        shrinkage = 0.0 if beta == 0 else beta / delta
    elif estimator == "oas":
        alpha = float((empirical**2).mean())
        denominator = (num + 1) * (alpha - mu**2 / dim)
        shrinkage = 1.0 if denominator == 0 else min((alpha + mu**2) / denominator, 1.0)
    else:
        msg = f"covariance estimator must be one of {_COVARIANCE_ESTIMATORS}, got {estimator!r}."
        raise InputError(msg)
    shrunk = (1.0 - shrinkage) * empirical
    shrunk.diagonal().add_(shrinkage * mu)
    return shrunk, shrinkage


def combine_views(distances: torch.Tensor, method: CombineMethod = "harmonic") -> torch.Tensor:
    """Combine per-view distances into one distance per image and class.

    Args:
        distances: ``(V, B, C)`` distances of ``V`` views of ``B`` images to ``C`` classes.
        method: ``"harmonic"`` (``V / sum_v 1 / D_vc``, the paper's SEI; the authors' "wa",
            a mean weighted by inverse distances), ``"mean"`` (arithmetic) or ``"min"`` (over views).

    Returns:
        ``(B, C)`` combined distances.
    """
    if distances.dim() != 3:
        msg = f"distances must be (V, B, C), got shape {tuple(distances.shape)}."
        raise ValueError(msg)
    if method == "harmonic":
        return distances.shape[0] / distances.clamp_min(_HARMONIC_FLOOR).reciprocal().sum(dim=0)
    if method == "mean":
        return distances.mean(dim=0)
    if method == "min":
        return distances.min(dim=0).values
    msg = f"method must be one of {_COMBINE_METHODS}, got {method!r}."
    raise ValueError(msg)


class ClassRotationGaussians(nn.Module):
    """Gaussians of the training features per (class, rotation), with Mahalanobis/SEI scoring.

    Buffers (zeros until :meth:`fit`, so ``load_state_dict`` works on a fresh instance):

    * ``mean``: ``(C, R, D)``.
    * ``precision``: ``(C, R, D, D)``, inverse of ``Sigma + lambda I`` (see module docstring).
    * ``counts``: ``(C, R)`` int64, training samples per cell (0 = not fitted).

    Args:
        num_classes: ``C`` (1 in one-class mode).
        num_rotations: ``R`` (4).
        dim: Feature dimension ``D`` (128 for MCL's head).
        covariance: Estimator of each cell's covariance (:func:`estimate_covariance`):
            ``"ledoit_wolf"`` (default) or ``"oas"`` (shrinkage chosen from the data, for cells of
            tens to thousands of images), or ``"sample"`` (the ridge alone makes it invertible).
        ridge: Diagonal loading added after the estimator, relative to the mean variance of the
            cell when ``relative_ridge`` (default ``1e-3``), else absolute.
        relative_ridge: Interpret ``ridge`` relative to ``trace(Sigma) / D``.
        combine: Default view combiner of :meth:`forward`/:meth:`sei_score`.
        squared: Use squared Mahalanobis distances (default: plain, as the paper).

    Example:
        >>> gaussians = ClassRotationGaussians(num_classes=10, num_rotations=4, dim=128)
        >>> gaussians.fit(train_features, train_classes, train_rotations)
        >>> scores = gaussians(test_features, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))  # (B,)
    """

    mean: torch.Tensor
    precision: torch.Tensor
    counts: torch.Tensor

    #: :func:`combine_views`, also reachable from the module.
    combine_views = staticmethod(combine_views)

    def __init__(
        self,
        num_classes: int,
        num_rotations: int = 4,
        dim: int = 128,
        covariance: CovarianceEstimator = "ledoit_wolf",
        ridge: float = 1e-3,
        relative_ridge: bool = True,
        combine: CombineMethod = "harmonic",
        squared: bool = False,
    ) -> None:
        super().__init__()
        if num_classes < 1 or num_rotations < 1 or dim < 1:
            msg = f"num_classes, num_rotations and dim must be >= 1, got {num_classes}, {num_rotations}, {dim}."
            raise InputError(msg)
        if ridge < 0:
            msg = f"ridge must be >= 0, got {ridge}."
            raise InputError(msg)
        if combine not in _COMBINE_METHODS:
            msg = f"combine must be one of {_COMBINE_METHODS}, got {combine!r}."
            raise InputError(msg)
        if covariance not in _COVARIANCE_ESTIMATORS:
            msg = f"covariance must be one of {_COVARIANCE_ESTIMATORS}, got {covariance!r}."
            raise InputError(msg)
        self.covariance = covariance
        #: Shrinkage of every cell at the last :meth:`fit` (0 for ``"sample"``), for logs; not saved.
        self.shrinkage = torch.zeros(num_classes, num_rotations, dtype=torch.float64)
        self.num_classes = num_classes
        self.num_rotations = num_rotations
        self.dim = dim
        self.ridge = ridge
        self.relative_ridge = relative_ridge
        self.combine = combine
        self.squared = squared
        self.register_buffer("mean", torch.zeros(num_classes, num_rotations, dim))
        self.register_buffer("precision", torch.zeros(num_classes, num_rotations, dim, dim))
        self.register_buffer("counts", torch.zeros(num_classes, num_rotations, dtype=torch.long))

    def extra_repr(self) -> str:
        """Shapes and options, for ``print(module)``."""
        return (
            f"num_classes={self.num_classes}, num_rotations={self.num_rotations}, dim={self.dim}, "
            f"covariance={self.covariance!r}, ridge={self.ridge}, relative_ridge={self.relative_ridge}, "
            f"combine={self.combine!r}, "
            f"squared={self.squared}"
        )

    @property
    def is_fitted(self) -> bool:
        """Whether every cell has been fitted (reads ``counts``; not for traced code)."""
        return bool((self.counts >= 2).all())

    @torch.no_grad()
    def fit(
        self, features: torch.Tensor, class_ids: torch.Tensor, rotation_ids: torch.Tensor
    ) -> ClassRotationGaussians:
        """Estimate mean and precision of every (class, rotation) cell.

        The covariance comes from the ``covariance`` estimator (:func:`estimate_covariance`), then
        the ridge is added. The shrinkage of every cell is kept in ``self.shrinkage`` (for logs).
        Computed in float64 on the CPU, stored in the buffers' dtype and device.

        Args:
            features: ``(N, D)`` training features (MCL: the L2-normalised head output).
            class_ids: ``(N,)`` integer classes in ``[0, C)``.
            rotation_ids: ``(N,)`` integer rotations in ``[0, R)``.

        Returns:
            ``self``.

        Raises:
            ValueError: On bad shapes or ids out of range, or if a cell has fewer than 2
                samples (the error lists every such cell with its count).
        """
        if features.dim() != 2 or features.shape[1] != self.dim:
            msg = f"features must be (N, {self.dim}), got shape {tuple(features.shape)}."
            raise ValueError(msg)
        num = features.shape[0]
        for name, ids, upper in (
            ("class_ids", class_ids, self.num_classes),
            ("rotation_ids", rotation_ids, self.num_rotations),
        ):
            if ids.shape != (num,):
                msg = f"{name} must be ({num},) to match features {tuple(features.shape)}, got {tuple(ids.shape)}."
                raise ValueError(msg)
            if ids.dtype.is_floating_point or ids.dtype == torch.bool:
                msg = f"{name} must be an integer tensor, got {ids.dtype}."
                raise ValueError(msg)
            if num and (int(ids.min()) < 0 or int(ids.max()) >= upper):
                msg = f"{name} must lie in [0, {upper}), got values in [{int(ids.min())}, {int(ids.max())}]."
                raise ValueError(msg)

        features64 = features.detach().to("cpu", torch.float64)
        cells = class_ids.to("cpu", torch.long) * self.num_rotations + rotation_ids.to("cpu", torch.long)
        counts = torch.bincount(cells, minlength=self.num_classes * self.num_rotations)
        counts = counts.view(self.num_classes, self.num_rotations)
        small = (counts < 2).nonzero().tolist()
        if small:
            listed = ", ".join(f"(class {c}, rotation {r}): {int(counts[c, r])}" for c, r in small[:20])
            more = f" and {len(small) - 20} more" if len(small) > 20 else ""
            msg = (
                f"Every (class, rotation) cell needs at least 2 training samples to estimate a covariance; "
                f"too few in {listed}{more}."
            )
            raise ValueError(msg)

        means = torch.empty(self.num_classes, self.num_rotations, self.dim, dtype=torch.float64)
        precisions = torch.empty(self.num_classes, self.num_rotations, self.dim, self.dim, dtype=torch.float64)
        eye = torch.eye(self.dim, dtype=torch.float64)
        shrinkage = torch.zeros(self.num_classes, self.num_rotations, dtype=torch.float64)
        for class_id in range(self.num_classes):
            for rotation_id in range(self.num_rotations):
                members = features64[cells == class_id * self.num_rotations + rotation_id]
                mean = members.mean(dim=0)
                covariance, shrinkage[class_id, rotation_id] = estimate_covariance(members, self.covariance)
                precisions[class_id, rotation_id] = self._regularised_inverse(covariance, eye, class_id, rotation_id)
                means[class_id, rotation_id] = mean

        self.mean.copy_(means)
        self.precision.copy_(precisions)
        self.counts.copy_(counts)
        self.shrinkage = shrinkage
        return self

    def _regularised_inverse(
        self, covariance: torch.Tensor, eye: torch.Tensor, class_id: int, rotation_id: int
    ) -> torch.Tensor:
        if self.relative_ridge:
            scale = float(torch.diagonal(covariance).mean())
            # A cell of identical samples has no scale: fall back to an absolute ridge.
            loading = self.ridge * scale if scale > 0 else max(self.ridge, 1e-12)
        else:
            loading = self.ridge
        regularised = covariance + loading * eye
        cholesky, info = torch.linalg.cholesky_ex(regularised)
        if int(info) != 0:
            msg = (
                f"The covariance of (class {class_id}, rotation {rotation_id}) plus ridge {loading:.3g} is not "
                "positive definite; raise `ridge`."
            )
            raise ValueError(msg)
        precision = torch.cholesky_inverse(cholesky)
        return (precision + precision.T) / 2

    def mahalanobis(self, features: torch.Tensor, rotation_ids: torch.Tensor) -> torch.Tensor:
        """Distance of every view to every class's Gaussian in the view's rotation.

        Args:
            features: ``(V, B, D)``: ``V`` views of ``B`` images.
            rotation_ids: ``(V,)`` integer rotation of each view (not range-checked, to stay
                traceable).

        Returns:
            ``(V, B, C)`` Mahalanobis distances (squared if ``squared``).
        """
        if features.dim() != 3 or features.shape[-1] != self.dim:
            msg = f"features must be (V, B, {self.dim}), got shape {tuple(features.shape)}."
            raise ValueError(msg)
        if rotation_ids.dim() != 1 or rotation_ids.shape[0] != features.shape[0]:
            msg = f"rotation_ids must be (V,) = ({features.shape[0]},), got shape {tuple(rotation_ids.shape)}."
            raise ValueError(msg)
        rotation_ids = rotation_ids.to(device=self.mean.device, dtype=torch.long)
        means = self.mean.index_select(1, rotation_ids).transpose(0, 1)  # (V, C, D)
        precisions = self.precision.index_select(1, rotation_ids).transpose(0, 1)  # (V, C, D, D)
        delta = features.to(self.mean.dtype).unsqueeze(2) - means.unsqueeze(1)  # (V, B, C, D)
        projected = torch.einsum("vbcd,vcde->vbce", delta, precisions)
        squared_distances = (projected * delta).sum(dim=-1).clamp_min(0.0)
        return squared_distances if self.squared else squared_distances.sqrt()

    def class_distances(
        self, features: torch.Tensor, rotation_ids: torch.Tensor, method: CombineMethod | None = None
    ) -> torch.Tensor:
        """Per-class SEI distances ``S_c`` (views combined), e.g. for class prediction by argmin.

        Args:
            features: ``(V, B, D)``.
            rotation_ids: ``(V,)``.
            method: View combiner; ``combine`` from the constructor when ``None``.

        Returns:
            ``(B, C)``.
        """
        return combine_views(self.mahalanobis(features, rotation_ids), method or self.combine)

    def sei_score(
        self, features: torch.Tensor, rotation_ids: torch.Tensor, method: CombineMethod | None = None
    ) -> torch.Tensor:
        """SEI anomaly score: ``min_c S_c``, higher = more anomalous.

        Args:
            features: ``(V, B, D)``.
            rotation_ids: ``(V,)``.
            method: View combiner; ``combine`` from the constructor when ``None``.

        Returns:
            ``(B,)``.
        """
        return self.class_distances(features, rotation_ids, method).min(dim=-1).values

    def forward(self, features: torch.Tensor, rotation_ids: torch.Tensor) -> torch.Tensor:
        """:meth:`sei_score` with the constructor's combiner: ``(V, B, D), (V,) -> (B,)``."""
        return self.sei_score(features, rotation_ids)
