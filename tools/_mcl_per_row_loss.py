"""The MCL loss one anchor at a time, as the authors' code loops (not shipped in the wheel).

The speed benchmark's paper-style row, and the reference the MCL loss tests compare against.

Written straight from the paper's formula, one anchor at a time, sharing no code with
:mod:`anomalib_firm.models.image.mcl.loss` (weights are decided row by row here, not taken from
:func:`~anomalib_firm.models.image.mcl.loss.item_pair_weights`). Slow by design: do not train with it.
"""

from __future__ import annotations

import torch


def naive_mcl_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    labels: torch.Tensor,
    partners: torch.Tensor,
    num_classes: int,
    temperature: float = 0.2,
    alpha: float = 0.05,
    beta: float = 2.0,
    spa_weight: float = 1.0,
    missing_partner: str = "exclude",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MCL loss computed with a Python loop over the ``2N`` anchors.

    Args:
        z1: ``(N, D)`` first views.
        z2: ``(N, D)`` second views.
        labels: ``(N,)`` integer labels ``class + num_classes * rotation``.
        partners: ``(N,)`` SPA partner item of every item, ``-1`` for none.
        num_classes: ``C``.
        temperature: ``t``.
        alpha: Same class, same rotation, other item.
        beta: Same class, other rotation.
        spa_weight: Weight of ``L_spa``.
        missing_partner: ``"exclude"`` (unpaired anchors leave the mean of ``L_spa``) or
            ``"own_view"`` (their own partner view is the positive).

    Returns:
        ``(total, L_ccm, L_spa)`` scalars.
    """
    num_items = z1.shape[0]
    views = torch.cat([z1, z2])
    views = views / views.norm(dim=1, keepdim=True)
    all_labels = labels.repeat(2).tolist()
    classes = torch.tensor([label % num_classes for label in all_labels], device=z1.device)
    rotations = torch.tensor([label // num_classes for label in all_labels], device=z1.device)
    item_partners = [int(p) for p in partners.tolist()]
    inv_t = 1.0 / temperature

    ccm_terms: list[torch.Tensor] = []
    spa_terms: list[torch.Tensor] = []
    for i in range(2 * num_items):
        item, view = i % num_items, i // num_items
        own = (i + num_items) % (2 * num_items)
        sims = (views @ views[i]).clamp(min=1e-7)

        # Weights of row i, from the paper's rules, decided on this row alone.
        weights = torch.full((2 * num_items,), inv_t, dtype=sims.dtype, device=z1.device)
        same_class = classes == classes[i]
        weights[same_class & (rotations != rotations[i])] = beta
        weights[same_class & (rotations == rotations[i])] = alpha
        weights[own] = inv_t
        others = torch.ones(2 * num_items, dtype=torch.bool, device=z1.device)
        others[i] = False

        log_denominator = torch.logsumexp((weights * sims)[others], dim=0)
        ccm_terms.append(-(sims[own] * inv_t - log_denominator))

        partner = item_partners[item]
        if partner < 0:
            if missing_partner == "own_view":
                spa_terms.append(ccm_terms[-1])
            continue
        positive = partner + view * num_items
        spa_weights = weights.clone()
        spa_weights[own] = 0.0
        spa_weights[positive] = inv_t
        log_denominator = torch.logsumexp((spa_weights * sims)[others], dim=0)
        spa_terms.append(-(sims[positive] * inv_t - log_denominator))

    ccm = torch.stack(ccm_terms).mean()
    spa = torch.stack(spa_terms).mean() if spa_terms else ccm.new_zeros(())
    return ccm + spa_weight * spa, ccm, spa
