"""Masked contrastive loss of MCL (Cho, Seol and Lee, IJCAI 2021, arXiv 2105.08793).

The batch holds ``N`` items, every training image in all four rotations, each with two
augmented views ``z1[i]`` and ``z2[i]`` and a label ``class + num_classes * rotation``. The
loss works on the ``2N x 2N`` cosine-similarity matrix over ``[z1; z2]`` (row ``i`` and row
``i + N`` are the two views of item ``i``), clamped below at ``1e-7``. Every logit is the
similarity times a pair weight (see :func:`item_pair_weights`):

======================================================  ============
pair (anchor ``i``, candidate ``k``)                     weight
======================================================  ============
own partner view (``k = i +- N``)                       ``1 / t``
different class (any rotation)                          ``1 / t``
same class, different rotation                          ``beta``
same class and rotation, another item (either view)    ``alpha``
self (``k = i``)                                         removed
======================================================  ============

``alpha`` is small (0.05): items of the same (class, rotation) are barely pushed apart,
which is the "mask" of the name. ``beta`` (2) pushes the rotations of a class apart less
than other classes (``1 / t = 5``).

* Class-conditional mask term: ``L_ccm = -mean_i log(exp(s_i,i+ / t) / sum_{k != i}
  exp(w_ik s_ik))``, the positive being the partner view.
* Stochastic positive attraction term ``L_spa``: every item draws, uniformly, another item
  with the same label; for an anchor on view ``v`` the positive is view ``v`` of that item
  (weight ``1 / t``), its own partner view gets weight 0 (logit 0, so it stays in the
  denominator with ``exp(0) = 1``), every other pair keeps its weight from the table.

Total loss: ``L_ccm + spa_weight * L_spa``.

Facts from the authors' code (``utils/loss.py`` of HyunsooCho77/MCL) that fix what the paper
leaves open: the partner is drawn once per item and shared by both of its views, and the
anchor on view ``v`` is attracted to the partner's view ``v`` (not to either view at random);
the same-label rows are weighted ``alpha`` for both views of the partner except the chosen one;
both terms average over all ``2N`` anchors with ``cross_entropy``.

Missing partners. When an item's label occurs only once in the batch, the authors' loop fails
(and, if exactly one other item shares the label, too, through a ``squeeze``) and their training
step drops ``L_spa`` for the whole batch inside a bare ``try``. Here the rule is explicit, see
:class:`MaskedContrastiveLoss` (``missing_partner``).

The implementation is fully vectorised: one similarity matmul, an ``(N, N)`` item weight matrix
broadcast over the four view blocks, two ``cross_entropy`` calls; no Python loop over rows.
A per-row version, written from the formula, is ``tools/_mcl_per_row_loss.py`` (the tests compare against it).
"""

from __future__ import annotations

import warnings
from typing import Literal, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from anomalib_firm.models.components.lifecycle.distributed import broadcast_from_rank0, gather_batch, gathering

MissingPartnerRule = Literal["exclude", "own_view", "raise"]
_MISSING_PARTNER_RULES: tuple[str, ...] = ("exclude", "own_view", "raise")

#: Lower clamp on the cosine similarities, as in the paper (``s_ik = max(cos, 1e-7)``).
SIMILARITY_FLOOR = 1e-7


class MCLLossOutput(NamedTuple):
    """The parts of the MCL loss, for logging.

    Attributes:
        loss: ``ccm + spa_weight * spa``, scalar, differentiable.
        ccm: Class-conditional mask term, scalar.
        spa: Stochastic positive attraction term (unweighted), scalar; 0 when no anchor has a
            partner under the ``"exclude"`` rule.
        num_unpaired: Number of anchors (rows of the ``2N x 2N`` matrix, so twice the number of
            items) whose label occurs on no other item of the batch, 0-dim int64 tensor.
    """

    loss: torch.Tensor
    ccm: torch.Tensor
    spa: torch.Tensor
    num_unpaired: torch.Tensor


def _check_labels(labels: torch.Tensor, num_items: int | None = None) -> None:
    if labels.dim() != 1:
        msg = f"labels must be 1-D (N,), got shape {tuple(labels.shape)}."
        raise ValueError(msg)
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        msg = f"labels must be an integer tensor (class + num_classes * rotation), got {labels.dtype}."
        raise ValueError(msg)
    if num_items is not None and labels.shape[0] != num_items:
        msg = f"labels has shape {tuple(labels.shape)} but the embeddings hold {num_items} items."
        raise ValueError(msg)


def partner_view_index(num_items: int, device: torch.device | None = None) -> torch.Tensor:
    """Index of the other view of every row of ``[z1; z2]``: ``i + N`` for ``i < N``, else ``i - N``.

    Args:
        num_items: ``N``.
        device: Device of the result.

    Returns:
        ``(2N,)`` int64.
    """
    rows = torch.arange(2 * num_items, device=device)
    return (rows + num_items) % (2 * num_items)


def item_pair_weights(
    labels: torch.Tensor,
    num_classes: int,
    *,
    temperature: float = 0.2,
    alpha: float = 0.05,
    beta: float = 2.0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Pair weights between items, ``(N, N)``: the same for all four view combinations of two items.

    The weight of a pair of rows of ``[z1; z2]`` depends only on the two items, except for the
    rows of one item: its two views are each other's positive (``1 / t``, the diagonal here) and
    a view with itself is removed by the loss. Keeping the ``(N, N)`` item matrix and
    broadcasting it over the ``2 x 2`` view blocks saves building a ``(2N, 2N)`` matrix.

    Args:
        labels: ``(N,)`` integer labels ``class + num_classes * rotation``.
        num_classes: ``C``, to decode ``class = label % C`` and ``rotation = label // C``.
        temperature: ``t``.
        alpha: Weight of another item with the same class and rotation.
        beta: Weight of the same class in another rotation.
        dtype: Floating dtype of the result.

    Returns:
        ``(N, N)`` weights, diagonal ``1 / t`` (own partner view).
    """
    _check_labels(labels)
    if num_classes < 1:
        msg = f"num_classes must be >= 1, got {num_classes}."
        raise ValueError(msg)
    classes = torch.remainder(labels, num_classes)
    rotations = torch.div(labels, num_classes, rounding_mode="floor")
    same_class = classes[:, None] == classes[None, :]
    same_rotation = rotations[:, None] == rotations[None, :]

    def constant(value: float) -> torch.Tensor:
        return torch.tensor(value, dtype=dtype, device=labels.device)

    weights = torch.where(
        same_class, torch.where(same_rotation, constant(alpha), constant(beta)), constant(1 / temperature)
    )
    weights.diagonal().fill_(1.0 / temperature)
    return weights


def sample_partners(labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw, for every item, another item of the batch with the same label, uniformly.

    Vectorised: every same-label candidate gets an independent uniform key and the largest key
    wins, which is a uniform choice among the candidates.

    Args:
        labels: ``(N,)`` integer labels.
        generator: Random generator (on ``labels.device``); the global RNG when ``None``.

    Returns:
        ``(N,)`` int64 item indices, ``-1`` for an item whose label no other item carries.
    """
    _check_labels(labels)
    num_items = labels.shape[0]
    eye = torch.eye(num_items, dtype=torch.bool, device=labels.device)
    candidates = (labels[:, None] == labels[None, :]) & ~eye
    keys = torch.rand((num_items, num_items), generator=generator, device=labels.device)
    keys = keys.masked_fill(~candidates, -1.0)
    choice = keys.argmax(dim=1)
    return torch.where(candidates.any(dim=1), choice, torch.full_like(choice, -1))


class MaskedContrastiveLoss(nn.Module):
    """MCL loss: class-conditional mask term plus stochastic positive attraction term.

    See the module docstring for the weights and both terms. Embeddings are L2-normalised
    inside (a no-op for the unit-norm output of the projection head), so the similarities are
    exact cosines.

    Missing-partner rule (``missing_partner``), for anchors whose label no other item carries
    (rare with the 4-rotation batches of MCL: it needs an image whose class occurs once in the
    batch; it cannot happen in one-class mode with at least 2 images per batch):

    * ``"exclude"`` (default): such anchors are left out of the mean of ``L_spa`` (the mean runs
      over the anchors that have a partner); their count is returned by :meth:`forward_parts`.
      If no anchor has a partner, ``L_spa = 0`` and a ``RuntimeWarning`` is issued once per
      loss instance.
    * ``"own_view"``: such anchors use their own partner view as the positive (weight ``1 / t``),
      so their ``L_spa`` row equals their ``L_ccm`` row and the mean keeps running over ``2N``
      anchors (the gradient scale of ``L_spa`` does not depend on the batch composition).
    * ``"raise"``: a ``ValueError`` naming the unpaired labels.

    Checking whether *no* anchor has a partner (for the warning) reads one boolean from the
    device, once per step, until the warning has been issued; it is skipped while compiling.

    Args:
        num_classes: ``C`` in ``label = class + C * rotation`` (1 in one-class mode).
        temperature: ``t`` (0.2 in the paper).
        alpha: Weight of another item of the same class and rotation (0.05).
        beta: Weight of the same class in another rotation (2.0).
        spa_weight: Weight of ``L_spa`` in the total (1.0; 0 disables it).
        missing_partner: ``"exclude"``, ``"own_view"`` or ``"raise"``, see above.
        gather_distributed: With several processes (DDP), gather the items of all ranks (with
            gradients): masks and partners span the global batch (partners drawn on rank 0).

    Example:
        >>> loss_fn = MaskedContrastiveLoss(num_classes=10)
        >>> loss = loss_fn(z1, z2, labels)  # z1, z2: (N, D) views, labels: (N,) int64
    """

    def __init__(
        self,
        num_classes: int,
        temperature: float = 0.2,
        alpha: float = 0.05,
        beta: float = 2.0,
        spa_weight: float = 1.0,
        missing_partner: MissingPartnerRule = "exclude",
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        self.gather_distributed = gather_distributed
        if num_classes < 1:
            msg = f"num_classes must be >= 1, got {num_classes}."
            raise ValueError(msg)
        if temperature <= 0:
            msg = f"temperature must be > 0, got {temperature}."
            raise ValueError(msg)
        if missing_partner not in _MISSING_PARTNER_RULES:
            msg = f"missing_partner must be one of {_MISSING_PARTNER_RULES}, got {missing_partner!r}."
            raise ValueError(msg)
        self.num_classes = num_classes
        self.temperature = temperature
        self.alpha = alpha
        self.beta = beta
        self.spa_weight = spa_weight
        self.missing_partner = missing_partner
        self._warned_no_partner = False

    def extra_repr(self) -> str:
        """Hyper-parameters, for ``print(module)``."""
        return (
            f"num_classes={self.num_classes}, temperature={self.temperature}, alpha={self.alpha}, "
            f"beta={self.beta}, spa_weight={self.spa_weight}, missing_partner={self.missing_partner!r}"
        )

    def forward(
        self,
        z1: torch.Tensor,
        z2: torch.Tensor,
        labels: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Total loss ``L_ccm + spa_weight * L_spa`` with freshly drawn partners.

        Args:
            z1: ``(N, D)`` embeddings of the first view of every item.
            z2: ``(N, D)`` embeddings of the second view.
            labels: ``(N,)`` integer labels ``class + num_classes * rotation``.
            generator: Random generator for the partner draw (global RNG when ``None``).

        Returns:
            Scalar loss.
        """
        return self.forward_parts(z1, z2, labels, generator=generator).loss

    def forward_parts(
        self,
        z1: torch.Tensor,
        z2: torch.Tensor,
        labels: torch.Tensor,
        partners: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> MCLLossOutput:
        """Loss and its parts; the partners may be given explicitly (tests, reproducibility).

        Args:
            z1: ``(N, D)`` embeddings of the first view of every item.
            z2: ``(N, D)`` embeddings of the second view.
            labels: ``(N,)`` integer labels ``class + num_classes * rotation``.
            partners: Optional ``(N,)`` integer item indices, the SPA partner of every item
                (another item with the same label), ``-1`` for none. Drawn with
                :func:`sample_partners` when ``None``. Not checked against the labels. When
                gathering (DDP), they index the gathered batch and are the same on every rank.
            generator: Random generator for the draw when ``partners`` is ``None``.

        Returns:
            :class:`MCLLossOutput` (total, ``L_ccm``, ``L_spa``, number of unpaired anchors).
        """
        self._check_inputs(z1, z2, labels)
        gathered = gathering(self.gather_distributed)
        if gathered:
            z1, z2, labels = gather_batch(z1, z2, labels)  # given partners index the gathered batch
        num_items = z1.shape[0]
        if partners is None:
            partners = sample_partners(labels, generator=generator)
            if gathered:
                partners = broadcast_from_rank0(partners)
        else:
            _check_labels(partners, num_items)
            partners = partners.to(device=labels.device, dtype=torch.long)

        embeddings = F.normalize(torch.cat([z1, z2]), dim=1)
        similarity = (embeddings @ embeddings.T).clamp_min(SIMILARITY_FLOOR)
        item_weights = item_pair_weights(
            labels,
            self.num_classes,
            temperature=self.temperature,
            alpha=self.alpha,
            beta=self.beta,
            dtype=similarity.dtype,
        )
        num_rows = 2 * num_items
        rows = torch.arange(num_rows, device=similarity.device)
        own_view = partner_view_index(num_items, similarity.device)
        inverse_t = 1.0 / self.temperature

        # L_ccm: positive = own partner view (weight 1/t, the diagonal of the item weights).
        # The item weights broadcast over the 2 x 2 view blocks; self pairs leave the softmax.
        logits = (similarity.view(2, num_items, 2, num_items) * item_weights.view(1, num_items, 1, num_items)).view(
            num_rows, num_rows
        )
        logits[rows, rows] = float("-inf")  # in place: the product's backward does not need it
        ccm = F.cross_entropy(logits, own_view)

        # L_spa: positive = the partner item's view on the anchor's side (1/t), own view weight 0.
        # Two entries per row differ from the L_ccm logits; rewrite them on a copy.
        row_partner = partners.repeat(2)
        has_partner = row_partner >= 0
        num_unpaired = (~has_partner).sum()
        if self.missing_partner == "raise":
            self._raise_if_unpaired(labels, partners)
        view_offset = torch.div(rows, num_items, rounding_mode="floor") * num_items
        spa_target = torch.where(has_partner, row_partner + view_offset, own_view)
        spa_logits = logits.clone()
        own_logit = similarity[rows, own_view] * inverse_t
        spa_logits[rows, own_view] = torch.where(has_partner, torch.zeros_like(own_logit), own_logit)
        spa_logits[rows, spa_target] = similarity[rows, spa_target] * inverse_t
        spa_rows = F.cross_entropy(spa_logits, spa_target, reduction="none")
        if self.missing_partner == "own_view":
            spa = spa_rows.mean()
        else:
            mask = has_partner.to(spa_rows.dtype)
            spa = (spa_rows * mask).sum() / mask.sum().clamp_min(1.0)
        self._warn_if_no_partner(has_partner)

        loss = ccm + self.spa_weight * spa
        return MCLLossOutput(loss=loss, ccm=ccm, spa=spa, num_unpaired=num_unpaired)

    @staticmethod
    def _check_inputs(z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor) -> None:
        if z1.dim() != 2 or z1.shape != z2.shape:
            msg = (
                f"z1 and z2 must both be (N, D) with the same shape, got z1 {tuple(z1.shape)}, "
                f"z2 {tuple(z2.shape)} (labels {tuple(labels.shape)})."
            )
            raise ValueError(msg)
        if labels.dim() != 1 or labels.shape[0] != z1.shape[0]:
            msg = f"labels must be (N,) = ({z1.shape[0]},) to match z1 {tuple(z1.shape)}, got {tuple(labels.shape)}."
            raise ValueError(msg)
        _check_labels(labels, z1.shape[0])
        if z1.shape[0] < 1:
            msg = "The batch is empty."
            raise ValueError(msg)

    @staticmethod
    def _raise_if_unpaired(labels: torch.Tensor, partners: torch.Tensor) -> None:
        unpaired = partners < 0
        if bool(unpaired.any()):
            missing = sorted({int(label) for label in labels[unpaired].tolist()})
            msg = (
                f"Stochastic positive attraction needs every label at least twice in the batch; labels "
                f"{missing[:10]}{' ...' if len(missing) > 10 else ''} occur once "
                "(missing_partner='raise'; use 'exclude' or 'own_view' to allow this)."
            )
            raise ValueError(msg)

    def _warn_if_no_partner(self, has_partner: torch.Tensor) -> None:
        if self._warned_no_partner or self.spa_weight == 0 or torch.compiler.is_compiling():
            return
        if not bool(has_partner.any()):
            self._warned_no_partner = True
            what = "L_spa is 0" if self.missing_partner == "exclude" else "L_spa repeats L_ccm"
            warnings.warn(
                f"MCL: no item in the batch shares its label with another item, so no stochastic positive "
                f"attraction partner exists and {what} (missing_partner={self.missing_partner!r}). "
                "Batches need at least two images of a class. Warned once.",
                RuntimeWarning,
                stacklevel=3,
            )
