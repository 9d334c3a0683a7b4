"""FIRM loss: supervised-contrastive attraction of inliers, repulsion of synthetic outliers.

Lunardi et al., "FIRM: Focused In-distribution Representation Modeling" (arXiv 2501.05130).
Inliers (normal images) are pulled towards each other; every synthetic outlier (a rotated
copy) has only its own second view as positive, so outliers, even rotations of the same
source image, repel each other and stay diverse.

The paper compares FIRM with two baselines on the same network, views and schedule; both are
options here (``objective``), so the comparison runs through the same code:

* ``ntxent``: NT-Xent (SimCLR), the only positive of an item is its own second view;
* ``supcon``: SupCon over the rotation-shifted items ("Rot-SupCon"), the positives of an item
  are all items of the same rotation (and class, with class labels). The authors' training
  code feeds SupCon the shifted-class labels (their ``labels``; the binary inlier/outlier
  labels are computed on the line before but not passed).
"""

from __future__ import annotations

from typing import Literal, cast

import torch
from torch import nn
from torch.nn import functional as F

from anomalib_firm.console import InputError
from anomalib_firm.models.components.lifecycle.distributed import gather_batch, gathering

LossLayout = Literal["pairwise", "concat"]
LossObjective = Literal["firm", "ntxent", "supcon"]
_OBJECTIVES: tuple[str, ...] = ("firm", "ntxent", "supcon")


def firm_positive_mask(
    is_inlier: torch.Tensor,
    class_labels: torch.Tensor | None = None,
    layout: LossLayout = "pairwise",
    objective: LossObjective = "firm",
    rotation_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Positive pairs of the FIRM loss (or of a baseline objective).

    Args:
        is_inlier: (N,) bool, True for normal items, False for synthetic outliers.
        class_labels: Optional (N,) int class of each item (multi-class ID): inliers are then
            positives only of inliers of the same class. Ignored for outliers.
        layout: ``pairwise``: (N, N) mask, rows are view-1 anchors, columns view-2 items.
            ``concat``: (2N, 2N) mask over ``[view 1; view 2]`` with the diagonal excluded.
        objective: ``firm`` (inliers attract all inliers, an outlier only its own view),
            ``ntxent`` (own view only) or ``supcon`` (all items of the same rotation and class).
        rotation_ids: (N,) int rotation of each item; needed by ``supcon``.

    Returns:
        Bool mask; ``mask[i, j]`` is True when column j is a positive of anchor i.
    """
    num_items = is_inlier.shape[0]
    own_view = torch.eye(num_items, dtype=torch.bool, device=is_inlier.device)
    if objective == "firm":
        same_group = is_inlier[:, None] & is_inlier[None, :]
        if class_labels is not None:
            same_group &= class_labels[:, None] == class_labels[None, :]
        pairwise = same_group | own_view
    elif objective == "ntxent":
        pairwise = own_view
    elif objective == "supcon":
        if rotation_ids is None:
            msg = "The supcon objective needs the rotation of every item (rotation_ids)."
            raise ValueError(msg)
        pairwise = rotation_ids[:, None] == rotation_ids[None, :]
        if class_labels is not None:
            pairwise &= class_labels[:, None] == class_labels[None, :]
    else:
        msg = f"Unknown FIRM loss objective {objective!r}: use one of {_OBJECTIVES}."
        raise InputError(msg)
    if layout == "pairwise":
        return pairwise
    # concat: every (view a, view b) block has the same positives; remove self-pairs.
    both_views = pairwise.repeat(2, 2)
    return both_views & ~torch.eye(2 * num_items, dtype=torch.bool, device=is_inlier.device)


class FirmLoss(nn.Module):
    """The FIRM contrastive loss.

    ``pairwise`` (the paper's): logits ``z1_i . z2_j / t`` over the N view-1 anchors and N
    view-2 candidates, ``L = -1/N sum_i sum_j P_ij log_softmax_j / max(1, sum_j P_ij)``.
    ``concat`` (the authors' packaged loss): the same over the 2N x 2N matrix of both views
    with self-similarities excluded; an anchor without positive is an error there.

    Args:
        temperature: Softmax temperature t (0.2 in the paper).
        layout: ``pairwise`` or ``concat``.
        objective: ``firm`` (default), or the paper's baselines ``ntxent`` and ``supcon`` (see
            the module docstring); same layout, temperature and reduction.
        gather_distributed: With several processes (DDP), gather the items of all ranks (with
            gradients) and compute the loss of the global batch (see :mod:`...components.distributed`).
    """

    def __init__(
        self,
        temperature: float = 0.2,
        layout: LossLayout = "pairwise",
        objective: LossObjective = "firm",
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        self.gather_distributed = gather_distributed
        if objective not in _OBJECTIVES:
            msg = f"Unknown FIRM loss objective {objective!r}: use one of {_OBJECTIVES}."
            raise InputError(msg)
        self.objective = objective
        if layout not in ("pairwise", "concat"):
            msg = f"Unknown FIRM loss layout {layout!r}: use 'pairwise' or 'concat'."
            raise InputError(msg)
        if temperature <= 0:
            msg = f"temperature must be > 0, got {temperature}."
            raise InputError(msg)
        self.temperature = temperature
        self.layout = layout

    def forward(
        self,
        view1: torch.Tensor,
        view2: torch.Tensor,
        is_inlier: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        rotation_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Compute the loss.

        Args:
            view1: (N, D) unit-norm embeddings of the first view of each item.
            view2: (N, D) unit-norm embeddings of the second view (same item order).
            is_inlier: (N,) bool flags.
            class_labels: Optional (N,) int classes of the items (multi-class ID).
            rotation_ids: Optional (N,) int rotation of the items (needed by ``supcon``).

        Returns:
            Scalar loss.
        """
        _check_shapes(view1, view2, is_inlier, class_labels)
        if gathering(self.gather_distributed):
            gathered = gather_batch(view1, view2, is_inlier, class_labels, rotation_ids)  # one call: one size exchange
            view1, view2, is_inlier = cast("tuple[torch.Tensor, torch.Tensor, torch.Tensor]", gathered[:3])
            class_labels, rotation_ids = gathered[3:]
        positives = firm_positive_mask(is_inlier, class_labels, self.layout, self.objective, rotation_ids)
        if self.layout == "pairwise":
            logits = view1 @ view2.T / self.temperature
        else:
            both = torch.cat([view1, view2])
            logits = both @ both.T / self.temperature
            logits = logits.masked_fill(torch.eye(len(both), dtype=torch.bool, device=both.device), float("-inf"))
        log_prob = F.log_softmax(logits.float(), dim=1)
        positives_per_row = positives.sum(dim=1)
        if self.layout == "concat" and bool((positives_per_row == 0).any()):
            msg = "FIRM concat loss: an anchor has no positive pair."
            raise ValueError(msg)
        # masked_fill, not multiplication: -inf on the excluded diagonal times 0 would be NaN.
        positive_log_prob = log_prob.masked_fill(~positives, 0.0).sum(dim=1)
        return -(positive_log_prob / positives_per_row.clamp_min(1)).mean()


def _check_shapes(
    view1: torch.Tensor,
    view2: torch.Tensor,
    is_inlier: torch.Tensor,
    class_labels: torch.Tensor | None,
) -> None:
    if view1.ndim != 2 or view1.shape != view2.shape:
        msg = f"FIRM loss needs two views of shape (N, D), got {tuple(view1.shape)} and {tuple(view2.shape)}."
        raise ValueError(msg)
    if is_inlier.shape != (view1.shape[0],):
        msg = (
            f"FIRM loss got {view1.shape[0]} views per side but {tuple(is_inlier.shape)} inlier flags: "
            "there must be exactly one flag per item."
        )
        raise ValueError(msg)
    if class_labels is not None and class_labels.shape != is_inlier.shape:
        msg = f"class_labels must have shape {tuple(is_inlier.shape)}, got {tuple(class_labels.shape)}."
        raise ValueError(msg)
    if view1.shape[0] < 2:
        msg = "FIRM loss needs at least 2 items in a batch (contrastive)."
        raise ValueError(msg)
