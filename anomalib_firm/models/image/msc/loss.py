"""Mean-Shifted Contrastive loss (Reiss & Hoshen, arXiv 2106.03844) and its fixed centre.

MSC fine-tunes an ImageNet-pretrained network on one normal class. Plain contrastive learning
there fights the pretrained features: the normal features all lie in a narrow cone around their
mean ``c``, so pushing them apart uniformly on the sphere destroys what made them useful. MSC
measures angles *around the centre* instead: every L2-normalised feature ``z`` is shifted by
``c`` and re-normalised, ``theta = (z - c) / ||z - c||``, and NT-Xent is applied to ``theta``.
The centre is computed once with the pretrained network and never updated.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.nn import functional as F

from anomalib_firm.models.components.lifecycle.distributed import gather_batch, gathering

__all__ = ["MeanShiftedContrastiveLoss", "compute_center", "mean_shift", "nt_xent"]

_EPS = 1e-12


def compute_center(features: torch.Tensor | Iterable[torch.Tensor]) -> torch.Tensor:
    """Compute MSC's centre: the mean of the L2-normalised features of the normal training images.

    The features are normalised row by row first (the centre is a mean of unit vectors, so its
    norm is below 1), then averaged in float64 so that streaming many batches loses nothing.

    Args:
        features: (N, D) features, or an iterable of (B_i, D) batches (e.g. produced batch by batch
            by the pretrained network under ``torch.no_grad()``).

    Returns:
        The centre, shape (D,), in the dtype and on the device of the (first) input.

    Raises:
        ValueError: If the input is empty, not 2-D, or the batches disagree on D.
    """
    batches = [features] if isinstance(features, torch.Tensor) else features
    total: torch.Tensor | None = None
    count = 0
    dtype, device = torch.float32, torch.device("cpu")
    for batch in batches:
        if batch.ndim != 2:
            msg = f"Features must have shape (N, D), got {tuple(batch.shape)}."
            raise ValueError(msg)
        if total is None:
            dtype, device = batch.dtype, batch.device
            total = torch.zeros(batch.shape[1], dtype=torch.float64, device=batch.device)
        elif batch.shape[1] != total.shape[0]:
            msg = f"Feature batches disagree on D: {batch.shape[1]} vs {total.shape[0]}."
            raise ValueError(msg)
        total += F.normalize(batch.detach().double(), dim=1).sum(dim=0)
        count += batch.shape[0]
    if total is None or count == 0:
        msg = "Cannot compute the centre of no features."
        raise ValueError(msg)
    return (total / count).to(dtype=dtype, device=device)


def mean_shift(features: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    """Mean-shifted embedding ``theta = (z - c) / ||z - c||`` of each row.

    Args:
        features: (N, D) L2-normalised features ``z``.
        center: (D,) centre ``c``.

    Returns:
        (N, D) unit vectors (a row equal to ``c`` maps to zero instead of NaN).
    """
    return F.normalize(features - center, dim=1, eps=_EPS)


def nt_xent(views1: torch.Tensor, views2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent (SimCLR) loss over the 2B views of a batch.

    With ``u = cat(views1, views2)`` (2B, D) of unit vectors, view ``i``'s positive is the other
    view of the same image (``i ± B``) and its negatives are the other 2B - 2 views:
    ``l_i = -log(exp(u_i.u_p / t) / sum_{j != i} exp(u_i.u_j / t))``; the loss is the mean of the
    2B terms. Computed as a cross-entropy over the masked similarity matrix (log-sum-exp, stable).

    Args:
        views1: (B, D) unit vectors of the first views.
        views2: (B, D) unit vectors of the second views.
        temperature: ``t`` > 0.

    Returns:
        The scalar loss.
    """
    batch_size = views1.shape[0]
    views = torch.cat([views1, views2], dim=0)
    logits = views @ views.T / temperature
    self_mask = torch.eye(2 * batch_size, dtype=torch.bool, device=views.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    positives = torch.arange(2 * batch_size, device=views.device).roll(batch_size)
    return F.cross_entropy(logits, positives)


class MeanShiftedContrastiveLoss(nn.Module):
    """MSC's training loss: NT-Xent on mean-shifted views, plus the optional angular variant.

    Default (``angular_weight = 0``): ``loss = NT-Xent(theta(z1), theta(z2); t)`` with
    ``theta(z) = (z - c) / ||z - c||``.

    Angular variant (the authors' ``--angular``, the paper's arXiv v1 results; ``angular_weight``
    scales its extra term, 1 as theirs): the shift uses the centre's direction
    ``c_hat = c / ||c||`` instead of ``c``, and the loss adds
    ``angular_weight * (mean_i ||z1_i - c_hat||^2 + mean_i ||z2_i - c_hat||^2)``, the sum of the
    two views' means (each term ``2 - 2 z . c_hat`` for unit ``z``): it pulls normal features
    towards the centre's direction.

    The inputs are L2-normalised again inside (idempotent for normalised features, and the
    gradient then stays tangent to the sphere), so un-normalised features are also correct.

    Args:
        temperature: NT-Xent temperature (paper: 0.25).
        angular_weight: 0 = plain MSC; > 0 = the angular variant with this weight on its term
            (the authors': 1).
        gather_distributed: With several processes (DDP), gather the views of all ranks (with
            gradients): the negatives and means span the global batch.

    Example:
        >>> loss_fn = MeanShiftedContrastiveLoss()
        >>> z1, z2 = F.normalize(torch.randn(4, 8), dim=1), F.normalize(torch.randn(4, 8), dim=1)
        >>> loss_fn(z1, z2, compute_center(torch.cat([z1, z2]))).shape
        torch.Size([])
    """

    def __init__(
        self, temperature: float = 0.25, angular_weight: float = 0.0, gather_distributed: bool = False
    ) -> None:
        super().__init__()
        self.gather_distributed = gather_distributed
        if temperature <= 0:
            msg = f"temperature must be > 0, got {temperature}."
            raise ValueError(msg)
        if angular_weight < 0:
            msg = f"angular_weight must be >= 0, got {angular_weight}."
            raise ValueError(msg)
        self.temperature = float(temperature)
        self.angular_weight = float(angular_weight)

    @staticmethod
    def _validate(z1: torch.Tensor, z2: torch.Tensor, center: torch.Tensor) -> None:
        if z1.ndim != 2 or z2.ndim != 2:
            msg = f"z1 and z2 must have shape (B, D), got {tuple(z1.shape)} and {tuple(z2.shape)}."
            raise ValueError(msg)
        if z1.shape != z2.shape:
            msg = f"z1 and z2 must have the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}."
            raise ValueError(msg)
        if z1.shape[0] < 1:
            msg = "The batch is empty."
            raise ValueError(msg)
        if center.shape != (z1.shape[1],):
            msg = f"center must have shape (D,) = ({z1.shape[1]},), got {tuple(center.shape)}."
            raise ValueError(msg)

    def components(self, z1: torch.Tensor, z2: torch.Tensor, center: torch.Tensor) -> dict[str, torch.Tensor]:
        """Compute the loss and its terms (for logging).

        Args:
            z1: (B, D) features of the first views.
            z2: (B, D) features of the second views of the same images.
            center: (D,) the fixed centre (not differentiated).

        Returns:
            ``{"loss", "contrastive", "angular"}`` scalars; ``angular`` (the sum of the two views'
            mean squared distances to ``c_hat``) is computed (and logged) even when its weight is 0.

        Raises:
            ValueError: On mismatching or non-2-D shapes, or a centre of the wrong size.
        """
        self._validate(z1, z2, center)
        if gathering(self.gather_distributed):
            z1, z2 = gather_batch(z1, z2)
        center = center.detach().to(dtype=z1.dtype)
        z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
        center_direction = F.normalize(center, dim=0, eps=_EPS)
        shift = center_direction if self.angular_weight else center
        contrastive = nt_xent(mean_shift(z1, shift), mean_shift(z2, shift), self.temperature)
        angular = (z1 - center_direction).pow(2).sum(dim=1).mean() + (z2 - center_direction).pow(2).sum(dim=1).mean()
        loss = contrastive + self.angular_weight * angular if self.angular_weight else contrastive
        return {"loss": loss, "contrastive": contrastive, "angular": angular}

    def forward(self, z1: torch.Tensor, z2: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
        """Compute the scalar MSC loss of two views (B, D) each, given the centre (D,)."""
        return self.components(z1, z2, center)["loss"]

    def extra_repr(self) -> str:
        """Temperature and angular weight."""
        return f"temperature={self.temperature}, angular_weight={self.angular_weight}"
