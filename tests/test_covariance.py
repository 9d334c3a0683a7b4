"""Shrinkage covariance of the SEI Gaussians against scikit-learn's estimators (the reference)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.covariance import OAS, LedoitWolf

from anomalib_firm.models.components.scoring.gaussian_scorer import ClassRotationGaussians, estimate_covariance


@pytest.mark.parametrize(("num", "dim"), [(20, 128), (90, 128), (500, 16)])
@pytest.mark.parametrize(("estimator", "reference"), [("ledoit_wolf", LedoitWolf), ("oas", OAS)])
def test_shrinkage_matches_scikit_learn(num: int, dim: int, estimator: str, reference: type) -> None:
    rng = np.random.default_rng(num + dim)
    samples = rng.normal(size=(num, dim)) @ rng.normal(size=(dim, dim)) * 0.1 + 0.3
    covariance, shrinkage = estimate_covariance(torch.from_numpy(samples), estimator)
    fitted = reference().fit(samples)
    assert shrinkage == pytest.approx(fitted.shrinkage_, rel=1e-9)
    np.testing.assert_allclose(covariance.numpy(), fitted.covariance_, atol=1e-12)


def test_shrinkage_falls_with_more_samples() -> None:
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(32, 32))
    few = estimate_covariance(torch.from_numpy(rng.normal(size=(20, 32)) @ mixing), "ledoit_wolf")[1]
    many = estimate_covariance(torch.from_numpy(rng.normal(size=(5000, 32)) @ mixing), "ledoit_wolf")[1]
    assert 0 <= many < few <= 1
    assert many < 0.05


def test_sample_estimator_is_numpy_cov() -> None:
    samples = torch.randn(30, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    covariance, shrinkage = estimate_covariance(samples, "sample")
    assert shrinkage == 0.0
    np.testing.assert_allclose(covariance.numpy(), np.cov(samples.numpy(), rowvar=False), atol=1e-12)


def test_gaussians_use_the_estimator_and_record_shrinkage() -> None:
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(40, 16, generator=generator)
    classes = torch.zeros(40, dtype=torch.long)
    rotations = torch.arange(4).repeat_interleave(10)
    gaussians = ClassRotationGaussians(1, 4, 16, covariance="ledoit_wolf", ridge=0.0).fit(features, classes, rotations)
    members = features[rotations == 2].double()
    expected = torch.linalg.inv(torch.from_numpy(LedoitWolf().fit(members.numpy()).covariance_))
    torch.testing.assert_close(gaussians.precision[0, 2].double(), expected, rtol=1e-4, atol=1e-4)
    assert gaussians.shrinkage.shape == (1, 4)
    assert bool((gaussians.shrinkage > 0).all())


def test_unknown_estimator_is_named() -> None:
    with pytest.raises(ValueError, match="covariance must be one of"):
        ClassRotationGaussians(1, 4, 8, covariance="graphical_lasso")  # type: ignore[arg-type]


def test_isotropic_samples_need_no_shrinkage() -> None:
    samples = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]], dtype=torch.float64)
    covariance, shrinkage = estimate_covariance(samples, "ledoit_wolf")
    assert shrinkage == LedoitWolf().fit(samples.numpy()).shrinkage_ == 0
    torch.testing.assert_close(covariance, 0.5 * torch.eye(2, dtype=torch.float64))
