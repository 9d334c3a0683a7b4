"""MSC's mean-shifted contrastive loss against hand-computed values and a naive reference formula."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from anomalib_firm.models.image.msc.loss import MeanShiftedContrastiveLoss, compute_center, mean_shift, nt_xent


def naive_msc_loss(z1: torch.Tensor, z2: torch.Tensor, center: torch.Tensor, temperature: float) -> float:
    """The MSC contrastive term written out with Python loops, straight from the paper's formulas."""
    views = [row.tolist() for row in torch.cat([z1, z2])]
    c = center.tolist()
    thetas = []
    for z in views:
        norm_z = math.sqrt(sum(v * v for v in z))
        z = [v / norm_z for v in z]
        shifted = [a - b for a, b in zip(z, c, strict=True)]
        norm = math.sqrt(sum(v * v for v in shifted))
        thetas.append([v / norm for v in shifted])
    n = len(thetas)
    batch = n // 2
    total = 0.0
    for i in range(n):
        positive = (i + batch) % n
        sims = [sum(a * b for a, b in zip(thetas[i], thetas[j], strict=True)) / temperature for j in range(n)]
        denominator = sum(math.exp(sims[j]) for j in range(n) if j != i)
        total += -math.log(math.exp(sims[positive]) / denominator)
    return total / n


def test_mean_shift_by_hand() -> None:
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    c = torch.tensor([0.5, 0.5])
    # (1, 0) - (0.5, 0.5) = (0.5, -0.5) -> (1, -1) / sqrt(2); (0, 1) -> (-1, 1) / sqrt(2)
    s = 1 / math.sqrt(2)
    torch.testing.assert_close(mean_shift(z, c), torch.tensor([[s, -s], [-s, s]]))


def test_mean_shift_of_the_centre_itself_is_finite() -> None:
    c = torch.tensor([0.6, 0.8])
    assert torch.isfinite(mean_shift(c.unsqueeze(0), c)).all()


@pytest.mark.parametrize("temperature", [0.25, 0.5])
def test_nt_xent_by_hand(temperature: float) -> None:
    # Two images, views u = (e1, e2, e1, e2): each view has its positive at similarity 1 and two
    # negatives at 0, so every term is -log(e^(1/t) / (e^(1/t) + 2)) = log(1 + 2 e^(-1/t)).
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    views1, views2 = torch.stack([e1, e2]), torch.stack([e1, e2])
    expected = math.log(1 + 2 * math.exp(-1 / temperature))
    assert nt_xent(views1, views2, temperature).item() == pytest.approx(expected, rel=1e-6)


def test_nt_xent_opposite_positives_by_hand() -> None:
    # B = 2, views1 = (e1, e2), views2 = (-e1, -e2), t = 0.25. For view e1: positive -e1 (sim -1),
    # negatives e2 (0) and -e2 (0): l = -log(e^-4 / (e^-4 + 2)) = log(1 + 2 e^4). Same for all four.
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    loss = nt_xent(torch.stack([e1, e2]), torch.stack([-e1, -e2]), 0.25)
    assert loss.item() == pytest.approx(math.log(1 + 2 * math.exp(4)), rel=1e-6)


def test_single_image_batch_has_zero_contrastive_loss() -> None:
    # With B = 1 the denominator holds the positive only: -log(1) = 0.
    z = F.normalize(torch.randn(1, 5), dim=1)
    assert nt_xent(z, F.normalize(torch.randn(1, 5), dim=1), 0.25).item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize(("batch", "dim"), [(2, 3), (3, 4), (5, 16)])
def test_loss_matches_naive_formula(batch: int, dim: int) -> None:
    generator = torch.Generator().manual_seed(batch * 100 + dim)
    z1 = F.normalize(torch.randn(batch, dim, generator=generator, dtype=torch.float64), dim=1)
    z2 = F.normalize(torch.randn(batch, dim, generator=generator, dtype=torch.float64), dim=1)
    center = compute_center(torch.randn(7, dim, generator=generator, dtype=torch.float64))
    loss = MeanShiftedContrastiveLoss(temperature=0.25)(z1, z2, center)
    assert loss.item() == pytest.approx(naive_msc_loss(z1, z2, center, 0.25), rel=1e-10)


def test_angular_centre_loss_by_hand() -> None:
    # B = 1 (contrastive term 0). c = (0, 2) -> c_hat = (0, 1). ||(1, 0) - c_hat||^2 = 2 and
    # ||(0, 1) - c_hat||^2 = 0: the authors' term is the sum of the two views' means, 2.
    z1, z2, c = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([0.0, 2.0])
    terms = MeanShiftedContrastiveLoss(angular_weight=1.0).components(z1, z2, c)
    assert terms["angular"].item() == pytest.approx(2.0)
    assert terms["contrastive"].item() == pytest.approx(0.0, abs=1e-7)
    assert terms["loss"].item() == pytest.approx(2.0)


def _authors_angular_loss(z1: torch.Tensor, z2: torch.Tensor, c: torch.Tensor, t: float = 0.25) -> torch.Tensor:
    """The authors' --angular loss from their formula: shift by c / ||c||, plus the two views' means."""
    c_hat = c / c.norm()
    theta1, theta2 = (F.normalize(z - c_hat, dim=1) for z in (z1, z2))
    total = 0.0
    views = torch.cat([theta1, theta2])
    count = views.shape[0]
    for row in range(count):
        partner = (row + count // 2) % count
        logits = torch.stack([views[row] @ views[k] / t for k in range(count) if k != row])
        positive = views[row] @ views[partner] / t
        total = total - (positive - torch.logsumexp(logits, dim=0))
    contrastive = total / count
    return contrastive + ((z1 - c_hat).pow(2).sum(1).mean() + (z2 - c_hat).pow(2).sum(1).mean())


def test_angular_variant_matches_the_authors_formula() -> None:
    generator = torch.Generator().manual_seed(0)
    z1 = F.normalize(torch.randn(4, 6, generator=generator, dtype=torch.float64), dim=1)
    z2 = F.normalize(torch.randn(4, 6, generator=generator, dtype=torch.float64), dim=1)
    c = compute_center(torch.randn(9, 6, generator=generator, dtype=torch.float64))
    c_hat = c / c.norm()
    loss_fn = MeanShiftedContrastiveLoss(angular_weight=1.0)
    torch.testing.assert_close(loss_fn(z1, z2, c), _authors_angular_loss(z1, z2, c))
    terms = loss_fn.components(z1, z2, c)
    torch.testing.assert_close(terms["angular"], (2 - 2 * z1 @ c_hat).mean() + (2 - 2 * z2 @ c_hat).mean())
    # Off by default: the plain loss shifts by c itself (not its direction) and has no extra term.
    plain = MeanShiftedContrastiveLoss()(z1, z2, c)
    assert plain.item() == pytest.approx(naive_msc_loss(z1, z2, c, 0.25), rel=1e-10)


def test_loss_is_symmetric_and_permutation_invariant() -> None:
    generator = torch.Generator().manual_seed(1)
    z1 = F.normalize(torch.randn(6, 8, generator=generator), dim=1)
    z2 = F.normalize(torch.randn(6, 8, generator=generator), dim=1)
    c = compute_center(torch.cat([z1, z2]))
    loss_fn = MeanShiftedContrastiveLoss(angular_weight=1.0)
    permutation = torch.randperm(6, generator=generator)
    reference = loss_fn(z1, z2, c)
    torch.testing.assert_close(loss_fn(z2, z1, c), reference)
    torch.testing.assert_close(loss_fn(z1[permutation], z2[permutation], c), reference)


def test_gradients_match_finite_differences() -> None:
    generator = torch.Generator().manual_seed(2)
    z1 = torch.randn(3, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(3, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    c = compute_center(torch.randn(5, 4, generator=generator, dtype=torch.float64))
    loss_fn = MeanShiftedContrastiveLoss(angular_weight=1.0)
    assert torch.autograd.gradcheck(lambda a, b: loss_fn(a, b, c), (z1, z2))


def test_centre_is_not_differentiated_and_gradients_are_finite() -> None:
    z1 = F.normalize(torch.randn(4, 8), dim=1).requires_grad_()
    z2 = F.normalize(torch.randn(4, 8), dim=1).requires_grad_()
    c = compute_center(torch.cat([z1, z2]).detach()).requires_grad_()
    MeanShiftedContrastiveLoss(angular_weight=1.0)(z1, z2, c).backward()
    assert c.grad is None
    assert torch.isfinite(z1.grad).all()
    assert torch.isfinite(z2.grad).all()
    assert z1.grad.abs().sum() > 0


def test_compute_center_streams_batches() -> None:
    features = torch.randn(10, 4) * 3
    expected = (features / features.norm(dim=1, keepdim=True)).mean(dim=0)
    torch.testing.assert_close(compute_center(features), expected)
    torch.testing.assert_close(compute_center(iter([features[:3], features[3:]])), expected)
    assert compute_center(features.double()).dtype == torch.float64


def test_compute_center_validation() -> None:
    with pytest.raises(ValueError, match="no features"):
        compute_center([])
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        compute_center(torch.randn(4))
    with pytest.raises(ValueError, match="disagree"):
        compute_center([torch.randn(2, 3), torch.randn(2, 4)])


@pytest.mark.parametrize(
    ("z1", "z2", "center", "match"),
    [
        (torch.randn(4), torch.randn(4), torch.randn(4), r"\(B, D\)"),
        (torch.randn(4, 3), torch.randn(5, 3), torch.randn(3), "same shape"),
        (torch.randn(0, 3), torch.randn(0, 3), torch.randn(3), "empty"),
        (torch.randn(4, 3), torch.randn(4, 3), torch.randn(4), r"\(D,\) = \(3,\)"),
        (torch.randn(4, 3), torch.randn(4, 3), torch.randn(1, 3), r"\(D,\)"),
    ],
)
def test_shape_validation(z1: torch.Tensor, z2: torch.Tensor, center: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MeanShiftedContrastiveLoss()(z1, z2, center)


def test_hyper_parameter_validation() -> None:
    with pytest.raises(ValueError, match="temperature"):
        MeanShiftedContrastiveLoss(temperature=0.0)
    with pytest.raises(ValueError, match="angular_weight"):
        MeanShiftedContrastiveLoss(angular_weight=-1.0)
    assert "temperature=0.25" in repr(MeanShiftedContrastiveLoss())
