"""Per-(class, rotation) Gaussians and SEI scoring against numpy / naive computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anomalib_firm.models.components.scoring.gaussian_scorer import ClassRotationGaussians, combine_views

C, R, D = 2, 3, 6
PER_CELL = 25


def training_set(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unit-norm features, one cluster per (class, rotation) cell, shuffled."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(C, R, D, generator=generator)
    classes = torch.arange(C).repeat_interleave(R * PER_CELL)
    rotations = torch.arange(R).repeat_interleave(PER_CELL).repeat(C)
    scales = torch.linspace(0.05, 0.5, D)  # anisotropic clusters
    features = centres[classes, rotations] + scales * torch.randn(C * R * PER_CELL, D, generator=generator)
    features = torch.nn.functional.normalize(features, dim=1)
    order = torch.randperm(features.shape[0], generator=generator)
    return features[order], classes[order], rotations[order]


def numpy_cell(features: np.ndarray, classes: np.ndarray, rotations: np.ndarray, c: int, r: int, ridge: float):
    members = features[(classes == c) & (rotations == r)]
    mean = members.mean(axis=0)
    cov = np.cov(members, rowvar=False)
    regularised = cov + ridge * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0])
    return mean, regularised


def test_fit_matches_numpy() -> None:
    features, classes, rotations = training_set()
    model = ClassRotationGaussians(C, R, D, covariance="sample", ridge=1e-3).fit(features, classes, rotations)
    f, cl, ro = (t.double().numpy() for t in (features, classes, rotations))
    for c in range(C):
        for r in range(R):
            mean, regularised = numpy_cell(f, cl, ro, c, r, ridge=1e-3)
            np.testing.assert_allclose(model.mean[c, r].numpy(), mean, rtol=0, atol=1e-6)
            precision = model.precision[c, r].double().numpy()
            np.testing.assert_allclose(precision, np.linalg.inv(regularised), rtol=1e-4, atol=1e-3)
            np.testing.assert_allclose(precision, precision.T)
    assert model.counts.tolist() == [[PER_CELL] * R] * C
    assert model.is_fitted


def test_absolute_ridge() -> None:
    features, classes, rotations = training_set()
    model = ClassRotationGaussians(C, R, D, covariance="sample", ridge=1e-4, relative_ridge=False)
    model.fit(features, classes, rotations)
    members = features[(classes == 1) & (rotations == 2)].double().numpy()
    expected = np.linalg.inv(np.cov(members, rowvar=False) + 1e-4 * np.eye(D))
    np.testing.assert_allclose(model.precision[1, 2].double().numpy(), expected, rtol=1e-4, atol=1e-2)


@pytest.mark.parametrize("squared", [False, True])
def test_mahalanobis_matches_solve(squared: bool) -> None:
    features, classes, rotations = training_set()
    model = ClassRotationGaussians(C, R, D, covariance="sample", squared=squared).fit(features, classes, rotations)
    test = torch.nn.functional.normalize(torch.randn(4, 5, D, generator=torch.Generator().manual_seed(1)), dim=-1)
    view_rotations = torch.tensor([0, 2, 1, 2])
    distances = model.mahalanobis(test, view_rotations)
    assert distances.shape == (4, 5, C)
    f, cl, ro = (t.double().numpy() for t in (features, classes, rotations))
    x = test.double().numpy()
    for v, r in enumerate(view_rotations.tolist()):
        for c in range(C):
            mean, regularised = numpy_cell(f, cl, ro, c, r, ridge=1e-3)
            for b in range(5):
                delta = x[v, b] - mean
                value = delta @ np.linalg.solve(regularised, delta)
                expected = value if squared else np.sqrt(value)
                assert distances[v, b, c].item() == pytest.approx(expected, rel=1e-4)


def test_combiners_match_naive_formulas() -> None:
    distances = torch.rand(8, 3, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64) + 0.1
    d = distances.numpy()
    harmonic = np.zeros((3, 4))
    for b in range(3):
        for c in range(4):
            harmonic[b, c] = 8 / sum(1 / d[v, b, c] for v in range(8))
    np.testing.assert_allclose(combine_views(distances, "harmonic").numpy(), harmonic, rtol=1e-12)
    np.testing.assert_allclose(combine_views(distances, "mean").numpy(), d.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(combine_views(distances, "min").numpy(), d.min(axis=0), rtol=1e-12)
    assert ClassRotationGaussians.combine_views is combine_views
    # A zero distance makes the harmonic mean 0, not NaN.
    distances[3, 0, 0] = 0.0
    assert combine_views(distances, "harmonic")[0, 0].item() == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="method"):
        combine_views(distances, "median")  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["harmonic", "mean", "min"])
def test_sei_score_is_min_over_classes(method: str) -> None:
    features, classes, rotations = training_set()
    model = ClassRotationGaussians(C, R, D, combine=method).fit(features, classes, rotations)
    test = torch.nn.functional.normalize(torch.randn(6, 7, D, generator=torch.Generator().manual_seed(3)), dim=-1)
    view_rotations = torch.tensor([0, 0, 1, 1, 2, 2])
    per_view = model.mahalanobis(test, view_rotations).double().numpy()
    if method == "harmonic":
        combined = per_view.shape[0] / (1 / per_view).sum(axis=0)
    elif method == "mean":
        combined = per_view.mean(axis=0)
    else:
        combined = per_view.min(axis=0)
    expected = combined.min(axis=1)
    np.testing.assert_allclose(model.sei_score(test, view_rotations).numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(model(test, view_rotations).numpy(), expected, rtol=1e-5)


def test_training_points_score_lower_than_outliers() -> None:
    features, classes, rotations = training_set()
    model = ClassRotationGaussians(C, R, D).fit(features, classes, rotations)
    inliers = torch.stack([features[(classes == 0) & (rotations == r)][:5] for r in range(R)])  # (R, 5, D)
    outliers = torch.nn.functional.normalize(torch.randn(R, 5, D, generator=torch.Generator().manual_seed(9)), dim=-1)
    ids = torch.arange(R)
    assert model.sei_score(inliers, ids).max() < model.sei_score(outliers, ids).min()


def test_tiny_cell_is_refused_with_its_name() -> None:
    features, classes, rotations = training_set()
    keep = ~((classes == 1) & (rotations == 2))
    keep[((classes == 1) & (rotations == 2)).nonzero()[0]] = True  # one sample left in (1, 2)
    keep &= ~((classes == 0) & (rotations == 1))  # none left in (0, 1)
    model = ClassRotationGaussians(C, R, D)
    with pytest.raises(ValueError, match=r"\(class 0, rotation 1\): 0.*\(class 1, rotation 2\): 1"):
        model.fit(features[keep], classes[keep], rotations[keep])
    assert not model.is_fitted


def test_input_validation() -> None:
    features, classes, rotations = training_set()
    model = ClassRotationGaussians(C, R, D)
    with pytest.raises(ValueError, match=r"\(N, 6\)"):
        model.fit(features[:, :5], classes, rotations)
    with pytest.raises(ValueError, match="rotation_ids"):
        model.fit(features, classes, rotations[:-1])
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        model.fit(features, classes + 1, rotations)
    model.fit(features, classes, rotations)
    with pytest.raises(ValueError, match=r"\(V, B, 6\)"):
        model.mahalanobis(features, rotations)
    with pytest.raises(ValueError, match=r"\(V,\)"):
        model.mahalanobis(features[None], torch.tensor([0, 1]))


def test_state_dict_round_trip_and_export_graph() -> None:
    features, classes, rotations = training_set()
    model = ClassRotationGaussians(C, R, D).fit(features, classes, rotations)
    state = model.state_dict()
    assert set(state) == {"mean", "precision", "counts"}
    assert state["precision"].shape == (C, R, D, D)
    fresh = ClassRotationGaussians(C, R, D)
    fresh.load_state_dict(state)
    test = features[:12].reshape(3, 4, D)
    ids = torch.tensor([0, 1, 2])
    torch.testing.assert_close(fresh(test, ids), model(test, ids))
    exported = torch.export.export(fresh, (test, ids))
    targets = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
    assert not any("linalg" in target or "inverse" in target or "cholesky" in target for target in targets)
    torch.testing.assert_close(exported.module()(test, ids), model(test, ids))
