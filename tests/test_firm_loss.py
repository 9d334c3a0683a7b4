"""FIRM loss against hand-computed values and a naive per-row reference."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from anomalib_firm.models.image.firm.loss import FirmLoss, firm_positive_mask

E1 = [1.0, 0.0]
E2 = [0.0, 1.0]


def _views(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows)


def test_pairwise_inlier_and_outlier_by_hand():
    # logits = z1 z2^T / 0.5 = [[2, 0], [0, 2]]; each row's only positive is its own view.
    z = _views(E1, E2)
    loss = FirmLoss(temperature=0.5)(z, z, torch.tensor([True, False]))
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-2)), abs=1e-6)


def test_pairwise_two_inliers_by_hand():
    # Both inliers: each row has both columns positive: -(q_own + q_other) / 2 = log(e^2 + 1) - 1.
    z = _views(E1, E2)
    loss = FirmLoss(temperature=0.5)(z, z, torch.tensor([True, True]))
    assert loss.item() == pytest.approx(math.log(math.exp(2) + 1) - 1, abs=1e-6)


def test_concat_by_hand():
    # Z = [e1, e2, e1, e2], logits / 0.5, diagonal excluded: every row sees {2, 0, 0} and its positive
    # (the other view of the same item) has logit 2: loss = log(e^2 + 2) - 2.
    z = _views(E1, E2)
    loss = FirmLoss(temperature=0.5, layout="concat")(z, z, torch.tensor([True, False]))
    assert loss.item() == pytest.approx(math.log(math.exp(2) + 2) - 2, abs=1e-6)


def test_positive_masks():
    flags = torch.tensor([True, True, False, False])
    expected_pairwise = torch.tensor(
        [
            [1, 1, 0, 0],  # inlier: all inlier columns
            [1, 1, 0, 0],
            [0, 0, 1, 0],  # outlier: only its own second view (rotations of one image repel)
            [0, 0, 0, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(firm_positive_mask(flags), expected_pairwise)
    concat = firm_positive_mask(flags, layout="concat")
    assert concat.shape == (8, 8)
    assert not concat.diagonal().any()
    assert concat[0].nonzero().flatten().tolist() == [1, 4, 5]  # other inlier views, not itself
    assert concat[2].nonzero().flatten().tolist() == [6]  # outlier: partner at i + N
    assert concat[6].nonzero().flatten().tolist() == [2]  # and back at i - N


def test_multi_class_masks():
    flags = torch.tensor([True, True, True, False])
    labels = torch.tensor([0, 0, 1, 0])
    mask = firm_positive_mask(flags, labels)
    assert mask[0].nonzero().flatten().tolist() == [0, 1]
    assert mask[2].nonzero().flatten().tolist() == [2]  # alone in its class: own view only
    assert mask[3].nonzero().flatten().tolist() == [3]  # outliers ignore labels


def _naive_pairwise(z1, z2, flags, labels, temperature):
    total = 0.0
    n = len(z1)
    for i in range(n):
        logits = [float(z1[i] @ z2[j]) / temperature for j in range(n)]
        log_norm = math.log(sum(math.exp(v) for v in logits))
        positives = [
            j for j in range(n) if j == i or (flags[i] and flags[j] and (labels is None or labels[i] == labels[j]))
        ]
        total += -sum(logits[j] - log_norm for j in positives) / max(1, len(positives))
    return total / n


def _naive_concat(z1, z2, flags, labels, temperature):
    both = torch.cat([z1, z2])
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        item_i = i % n
        others = [j for j in range(2 * n) if j != i]
        logits = {j: float(both[i] @ both[j]) / temperature for j in others}
        log_norm = math.log(sum(math.exp(v) for v in logits.values()))
        positives = [
            j
            for j in others
            if j % n == item_i
            or (flags[item_i] and flags[j % n] and (labels is None or labels[item_i] == labels[j % n]))
        ]
        total += -sum(logits[j] - log_norm for j in positives) / len(positives)
    return total / (2 * n)


@pytest.mark.parametrize("layout", ["pairwise", "concat"])
@pytest.mark.parametrize("with_labels", [False, True])
def test_matches_naive_reference(layout, with_labels):
    generator = torch.Generator().manual_seed(0)
    z1 = F.normalize(torch.randn(12, 8, generator=generator), dim=1)
    z2 = F.normalize(torch.randn(12, 8, generator=generator), dim=1)
    flags = torch.arange(12) % 4 == 0
    labels = torch.arange(12) % 3 if with_labels else None
    naive = _naive_pairwise if layout == "pairwise" else _naive_concat
    expected = naive(z1, z2, flags.tolist(), None if labels is None else labels.tolist(), 0.2)
    loss = FirmLoss(temperature=0.2, layout=layout)(z1, z2, flags, labels)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_gradients_flow():
    z1 = F.normalize(torch.randn(8, 4), dim=1).requires_grad_()
    z2 = F.normalize(torch.randn(8, 4), dim=1).requires_grad_()
    FirmLoss()(z1, z2, torch.arange(8) < 2).backward()
    assert torch.isfinite(z1.grad).all()
    assert z1.grad.abs().sum() > 0


def test_more_views_than_flags_is_a_clear_error():
    z = F.normalize(torch.randn(8, 4), dim=1)
    with pytest.raises(ValueError, match="one flag per item"):
        FirmLoss()(z, z, torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="two views"):
        FirmLoss()(z, z[:6], torch.ones(8, dtype=torch.bool))
    with pytest.raises(ValueError, match="layout"):
        FirmLoss(layout="diagonal")


# ----------------------------------------------------------------- baseline objectives (paper's comparison)
def _random_views(num: int = 12, dim: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    z1 = F.normalize(torch.randn(num, dim, generator=generator), dim=1)
    z2 = F.normalize(torch.randn(num, dim, generator=generator), dim=1)
    return z1, z2


def test_ntxent_is_cross_entropy_on_the_own_view():
    z1, z2 = _random_views()
    rotations = torch.arange(4).repeat_interleave(3)
    loss = FirmLoss(temperature=0.2, objective="ntxent")(z1, z2, rotations == 0, rotation_ids=rotations)
    expected = F.cross_entropy(z1 @ z2.T / 0.2, torch.arange(12))
    torch.testing.assert_close(loss, expected)


def test_supcon_matches_a_per_row_reference():
    z1, z2 = _random_views()
    rotations = torch.arange(4).repeat_interleave(3)
    loss = FirmLoss(temperature=0.2, objective="supcon")(z1, z2, rotations == 0, rotation_ids=rotations)
    rows = []
    for i in range(12):
        log_prob = F.log_softmax(z1[i] @ z2.T / 0.2, dim=0)
        positives = [j for j in range(12) if rotations[j] == rotations[i]]
        rows.append(-sum(log_prob[j] for j in positives) / len(positives))
    torch.testing.assert_close(loss, torch.stack(rows).mean())


def test_supcon_by_hand():
    # Two items of one rotation, both positives of each other: the same value as two FIRM inliers.
    z = _views(E1, E2)
    loss = FirmLoss(temperature=0.5, objective="supcon")(z, z, torch.tensor([True, False]), rotation_ids=torch.zeros(2))
    assert loss.item() == pytest.approx(math.log(math.exp(2) + 1) - 1, abs=1e-6)


def test_objective_errors_name_the_setting():
    with pytest.raises(ValueError, match="objective"):
        FirmLoss(objective="simclr")  # type: ignore[arg-type]
    z = _views(E1, E2)
    with pytest.raises(ValueError, match="rotation_ids"):
        FirmLoss(objective="supcon")(z, z, torch.tensor([True, False]))


def test_the_training_step_marks_the_unrotated_items_as_inliers():
    """Firm.compute_loss hands the loss the unrotated copies as inliers, the 90/180/270 degree ones as outliers."""
    from anomalib_firm.models import Firm
    from anomalib_firm.models.components.views.rotations import rotate

    model = Firm(image_size=8, head_hidden_dim=16, head_layers=2, mixed_precision=False, visualizer=False)
    images = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    seen = {}

    class Recorder(torch.nn.Module):
        def forward(self, view1, view2, inliers, class_labels, rotation_ids):
            seen.update(inliers=inliers, rotation_ids=rotation_ids)
            return view1.sum() * 0

    model.views = torch.nn.Identity()  # the items themselves reach the network
    model.loss = Recorder()
    inputs = []
    model.model.register_forward_hook(lambda _module, args, _output: inputs.append(args[0]))
    model.training_loss(images, None)
    assert seen["inliers"].tolist() == [True] * 3 + [False] * 9
    upright = inputs[0][:12][seen["inliers"]]
    torch.testing.assert_close(upright, images)
    for rotation in (1, 2, 3):
        rotated = inputs[0][:12][seen["rotation_ids"] == rotation]
        torch.testing.assert_close(rotated, rotate(images, rotation))


def test_labelled_mode_needs_class_labels_in_the_batch():
    """The mixin's shared check: FIRM with use_class_labels names the setting when the batch has no classes."""
    from types import SimpleNamespace

    from anomalib_firm.models import Firm

    model = Firm(image_size=8, head_hidden_dim=16, head_layers=2, use_class_labels=True, visualizer=False)
    with pytest.raises(ValueError, match="use_class_labels=True needs class labels"):
        model.training_class_labels(SimpleNamespace(image=torch.rand(2, 3, 8, 8)))
    batch = SimpleNamespace(image=torch.rand(2, 3, 8, 8), class_label=torch.tensor([1, 0]))
    labels = model.training_class_labels(batch)
    assert labels.tolist() == [1, 0]
    assert Firm(image_size=8, head_hidden_dim=16, head_layers=2, visualizer=False).training_class_labels(None) is None
