"""MCL loss: pair weights, agreement with the per-row reference, partners, validation, gradients."""

from __future__ import annotations

import warnings

import pytest
import torch
from tool_utils import imported_tool

from anomalib_firm.models.image.mcl.loss import (
    MaskedContrastiveLoss,
    item_pair_weights,
    partner_view_index,
    sample_partners,
)

with imported_tool("_mcl_per_row_loss") as _per_row:  # the authors' loop, written from the formula
    naive_mcl_loss = _per_row.naive_mcl_loss

T, ALPHA, BETA = 0.2, 0.05, 2.0


def rotation_batch(classes: list[int], num_classes: int) -> torch.Tensor:
    """Labels of a MCL batch: every image in the 4 rotations, rotation-major."""
    base = torch.tensor(classes)
    return torch.cat([base + num_classes * rotation for rotation in range(4)])


def random_views(num_items: int, dim: int, dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    z1 = torch.nn.functional.normalize(torch.randn(num_items, dim, generator=generator, dtype=dtype), dim=1)
    # Second view close to the first, so that similarities are not all clamped.
    z2 = torch.nn.functional.normalize(z1 + 0.5 * torch.randn(num_items, dim, generator=generator, dtype=dtype), dim=1)
    return z1, z2


def test_pair_weights_hand_built() -> None:
    # C = 2. Items: 0 = (class 0, rot 0), 1 = (class 0, rot 0), 2 = (class 1, rot 0),
    # 3 = (class 0, rot 1), 4 = (class 1, rot 3).
    labels = torch.tensor([0, 0, 1, 2, 7])
    # Over the rows of [z1; z2]: the item weights in the four view blocks, self pairs (removed by the loss) 0.
    weights = item_pair_weights(labels, num_classes=2, temperature=T, alpha=ALPHA, beta=BETA).repeat(2, 2)
    weights.diagonal().zero_()
    d, a, b, o = 1 / T, ALPHA, BETA, 1 / T  # different class, same cell, same class other rotation, own view
    s = 0.0  # self (excluded from the softmax by the loss)
    # fmt: off
    expected = torch.tensor([
        # view 1: items 0..4         view 2: items 0..4
        [s, a, d, b, d,              o, a, d, b, d],  # item 0, view 1
        [a, s, d, b, d,              a, o, d, b, d],  # item 1
        [d, d, s, d, b,              d, d, o, d, b],  # item 2
        [b, b, d, s, d,              b, b, d, o, d],  # item 3
        [d, d, b, d, s,              d, d, b, d, o],  # item 4
        [o, a, d, b, d,              s, a, d, b, d],  # item 0, view 2
        [a, o, d, b, d,              a, s, d, b, d],  # item 1
        [d, d, o, d, b,              d, d, s, d, b],  # item 2
        [b, b, d, o, d,              b, b, d, s, d],  # item 3
        [d, d, b, d, o,              d, d, b, d, s],  # item 4
    ])
    # fmt: on
    torch.testing.assert_close(weights, expected)
    assert partner_view_index(5).tolist() == [5, 6, 7, 8, 9, 0, 1, 2, 3, 4]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("num_classes", [1, 3])
def test_loss_matches_per_row_reference(dtype: torch.dtype, num_classes: int) -> None:
    classes = [0, 1, 2, 0, 1, 2, 0] if num_classes == 3 else [0] * 5
    labels = rotation_batch(classes, num_classes)
    z1, z2 = random_views(labels.shape[0], 16, dtype)
    partners = sample_partners(labels, generator=torch.Generator().manual_seed(3))
    assert (partners >= 0).all()
    loss_fn = MaskedContrastiveLoss(num_classes=num_classes, temperature=T, alpha=ALPHA, beta=BETA, spa_weight=0.7)
    out = loss_fn.forward_parts(z1, z2, labels, partners=partners)
    total, ccm, spa = naive_mcl_loss(z1, z2, labels, partners, num_classes, T, ALPHA, BETA, spa_weight=0.7)
    tol = {"rtol": 0, "atol": 1e-5}
    torch.testing.assert_close(out.ccm, ccm, **tol)
    torch.testing.assert_close(out.spa, spa, **tol)
    torch.testing.assert_close(out.loss, total, **tol)
    assert int(out.num_unpaired) == 0


@pytest.mark.parametrize("rule", ["exclude", "own_view"])
def test_gradients_match_reference_with_unpaired_items(rule: str) -> None:
    # Class 2 has one image: its 4 rotations (8 anchors) have no SPA partner.
    labels = rotation_batch([0, 1, 0, 2, 1, 0], num_classes=3)
    z1, z2 = random_views(labels.shape[0], 8, torch.float64, seed=1)
    partners = sample_partners(labels, generator=torch.Generator().manual_seed(0))
    assert int((partners < 0).sum()) == 4
    z1a, z2a = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    z1b, z2b = z1.clone().requires_grad_(), z2.clone().requires_grad_()

    out = MaskedContrastiveLoss(num_classes=3, missing_partner=rule).forward_parts(z1a, z2a, labels, partners=partners)
    total, _, spa = naive_mcl_loss(z1b, z2b, labels, partners, 3, missing_partner=rule)
    torch.testing.assert_close(out.loss, total, rtol=0, atol=1e-10)
    torch.testing.assert_close(out.spa, spa, rtol=0, atol=1e-10)
    assert int(out.num_unpaired) == 8
    out.loss.backward()
    total.backward()
    torch.testing.assert_close(z1a.grad, z1b.grad, rtol=0, atol=1e-10)
    torch.testing.assert_close(z2a.grad, z2b.grad, rtol=0, atol=1e-10)


def test_gradients_flow_to_both_views() -> None:
    labels = rotation_batch([0, 1, 0, 1], num_classes=2)
    z1 = torch.randn(labels.shape[0], 32, requires_grad=True)
    z2 = torch.randn(labels.shape[0], 32, requires_grad=True)
    loss = MaskedContrastiveLoss(num_classes=2)(z1, z2, labels)
    loss.backward()
    for grad in (z1.grad, z2.grad):
        assert grad is not None
        assert torch.isfinite(grad).all()
        assert grad.abs().sum() > 0


def test_no_partner_at_all_exclude_gives_zero_spa_and_warns_once() -> None:
    labels = rotation_batch([0, 1, 2, 3], num_classes=4)  # one image per class: every label unique
    z1, z2 = random_views(labels.shape[0], 8, torch.float32)
    loss_fn = MaskedContrastiveLoss(num_classes=4)
    with pytest.warns(RuntimeWarning, match="no stochastic positive attraction partner"):
        out = loss_fn.forward_parts(z1, z2, labels)
    assert float(out.spa) == 0.0
    assert int(out.num_unpaired) == 2 * labels.shape[0]
    torch.testing.assert_close(out.loss, out.ccm)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss_fn.forward_parts(z1, z2, labels)  # second time: silent


def test_no_partner_at_all_own_view_repeats_ccm() -> None:
    labels = rotation_batch([0, 1], num_classes=2)
    z1, z2 = random_views(labels.shape[0], 8, torch.float64)
    loss_fn = MaskedContrastiveLoss(num_classes=2, missing_partner="own_view")
    with pytest.warns(RuntimeWarning):
        out = loss_fn.forward_parts(z1, z2, labels)
    torch.testing.assert_close(out.spa, out.ccm)


def test_missing_partner_raise_names_labels() -> None:
    labels = rotation_batch([0, 1, 0], num_classes=2)  # class 1 once: labels 1, 3, 5, 7 unpaired
    z1, z2 = random_views(labels.shape[0], 8, torch.float32)
    loss_fn = MaskedContrastiveLoss(num_classes=2, missing_partner="raise")
    with pytest.raises(ValueError, match=r"\[1, 3, 5, 7\]"):
        loss_fn(z1, z2, labels)
    paired = rotation_batch([0, 1, 0, 1], num_classes=2)
    z1, z2 = random_views(paired.shape[0], 8, torch.float32)
    assert torch.isfinite(loss_fn(z1, z2, paired))


def test_sample_partners_valid_reproducible_uniform() -> None:
    labels = torch.tensor([5, 5, 5, 5, 2, 9, 2])
    partners = sample_partners(labels, generator=torch.Generator().manual_seed(0))
    assert partners[5] == -1
    for i, p in enumerate(partners.tolist()):
        if p >= 0:
            assert p != i
            assert labels[p] == labels[i]
    again = sample_partners(labels, generator=torch.Generator().manual_seed(0))
    assert torch.equal(partners, again)
    assert partners[4] == 6
    assert partners[6] == 4
    generator = torch.Generator().manual_seed(1)
    draws = torch.stack([sample_partners(labels, generator=generator)[0] for _ in range(3000)])
    frequencies = torch.bincount(draws, minlength=4)[1:4].double() / 3000
    assert draws.min() >= 1
    torch.testing.assert_close(frequencies, torch.full((3,), 1 / 3, dtype=torch.float64), rtol=0, atol=0.04)


def test_forward_draws_partners_from_generator() -> None:
    labels = rotation_batch([0, 1, 0, 1, 0], num_classes=2)
    z1, z2 = random_views(labels.shape[0], 8, torch.float32)
    loss_fn = MaskedContrastiveLoss(num_classes=2)
    first = loss_fn(z1, z2, labels, generator=torch.Generator().manual_seed(7))
    second = loss_fn(z1, z2, labels, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first, second)
    partners = sample_partners(labels, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(first, loss_fn.forward_parts(z1, z2, labels, partners=partners).loss)


def test_shape_validation() -> None:
    loss_fn = MaskedContrastiveLoss(num_classes=2)
    labels = rotation_batch([0, 1], 2)
    with pytest.raises(ValueError, match=r"\(8, 16\).*\(8, 15\)"):
        loss_fn(torch.randn(8, 16), torch.randn(8, 15), labels)
    with pytest.raises(ValueError, match=r"\(7,\)"):
        loss_fn(torch.randn(8, 16), torch.randn(8, 16), labels[:7])
    with pytest.raises(ValueError, match="integer"):
        loss_fn(torch.randn(8, 16), torch.randn(8, 16), labels.float())
    with pytest.raises(ValueError, match="missing_partner"):
        MaskedContrastiveLoss(num_classes=2, missing_partner="skip")  # type: ignore[arg-type]
