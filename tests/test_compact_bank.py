"""Compact feature banks: coreset / random size limit, half precision, checkpoint round trip."""

from __future__ import annotations

import lightning
import pytest
import torch
from model_utils import random_training_batch, tiny_model
from torch.nn import functional as F

from anomalib_firm.models import Firm
from anomalib_firm.models.components.lifecycle.contrastive_mixin import NormalBatch
from anomalib_firm.models.components.scoring.feature_bank import BankCompaction, FeatureBank


def clustered_features(views: int = 2, count: int = 300, dim: int = 32, seed: int = 0) -> torch.Tensor:
    """Unit features in a few tight clusters of very different sizes (views, count, dim)."""
    generator = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(6, dim, generator=generator), dim=-1)
    weights = torch.tensor([0.6, 0.25, 0.1, 0.03, 0.01, 0.01])
    members = torch.multinomial(weights, views * count, replacement=True, generator=generator)
    noise = 0.05 * torch.randn(views * count, dim, generator=generator)
    return F.normalize(centres[members] + noise, dim=-1).view(views, count, dim)


def covering_radius(features: torch.Tensor, kept: torch.Tensor) -> float:
    """Largest distance of a feature to its nearest kept feature (one view)."""
    return float((features[:, None] - kept[None]).norm(dim=-1).min(dim=1).values.max())


def test_coreset_keeps_members_and_their_own_nearest_neighbours():
    features = clustered_features()
    bank = FeatureBank(2, 32)
    bank.update(features, BankCompaction(max_size=40))
    assert bank.features.shape == (2, 40, 32)
    for view in range(2):
        # Every kept feature is one of the originals, unchanged...
        assert (bank.features[view, :, None] == features[view, None]).all(dim=-1).any(dim=1).all()
        # ...and, queried against the compact bank, finds itself as its nearest neighbour.
        assert torch.allclose(bank.cosine_topk(bank.features, k=1)[view], torch.ones(40), atol=1e-6)
        assert torch.allclose(bank.squared_l2(bank.features, k=1)[view], torch.zeros(40), atol=1e-5)


def test_coreset_covers_the_features_better_than_a_random_subset():
    features = clustered_features(views=1)
    coreset, random = FeatureBank(1, 32), FeatureBank(1, 32)
    coreset.update(features, BankCompaction(max_size=12, sampling="coreset"))
    random.update(features, BankCompaction(max_size=12, sampling="random"))
    # k-center greedy keeps a feature of every cluster, small ones included: a random subset misses some.
    assert covering_radius(features[0], coreset.features[0]) < 0.5 * covering_radius(features[0], random.features[0])


@pytest.mark.parametrize("sampling", ["coreset", "random"])
def test_subsampling_is_seeded_and_leaves_the_global_random_state_alone(sampling):
    features = clustered_features()
    first, again, other = (BankCompaction(max_size=30, sampling=sampling, seed=seed) for seed in (0, 0, 1))
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    chosen = first.select(features)
    assert torch.equal(torch.rand(3), expected_next)
    assert all(torch.equal(a, b) for a, b in zip(chosen, again.select(features)))
    assert any(not torch.equal(a, b) for a, b in zip(chosen, other.select(features)))
    assert all(len(indices) == 30 and torch.all(indices.diff() > 0) for indices in chosen)


def test_defaults_keep_the_bank_exact():
    features = clustered_features()
    bank = FeatureBank(2, 32)
    bank.update(features)
    assert torch.equal(bank.features, features)
    with pytest.raises(ValueError, match="positive"):
        BankCompaction(max_size=0)
    with pytest.raises(ValueError, match="sampling"):
        BankCompaction(sampling="kmeans")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["firm", "msc"])
def test_half_precision_bank_scores_close_to_full(name):
    images = random_training_batch(24, seed=0).image
    queries = random_training_batch(8, seed=1).image
    scores = {}
    for precision in ("float32", "float16"):
        torch.manual_seed(0)
        extra = {"with_center": True} if name == "msc" else {}
        model = tiny_model(name, bank_precision=precision, post_processor=False, evaluator=False, **extra).eval()
        with torch.no_grad():
            model.fit_scorer([NormalBatch(images)])
            scores[precision] = model(queries).pred_score
        assert model.model.bank.features.dtype == getattr(torch, precision)
    spread = float(scores["float32"].max() - scores["float32"].min())
    assert torch.allclose(scores["float16"], scores["float32"], atol=2e-3 * max(spread, 1.0))


def test_compact_bank_round_trips_through_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = tiny_model("firm", bank_size=10, bank_precision="float16", bank_sampling="random", bank_seed=3).eval()
    with torch.no_grad():
        model.fit_scorer([NormalBatch(random_training_batch(24, seed=0).image)])
    queries = random_training_batch(6, seed=1).image
    with torch.no_grad():
        expected = model.model(queries).pred_score
    path = tmp_path / "firm.ckpt"
    torch.save(
        {
            "state_dict": model.state_dict(),
            "hyper_parameters": dict(model.hparams),
            "pytorch-lightning_version": lightning.__version__,
        },
        path,
    )
    restored = Firm.load_from_checkpoint(path).eval()
    assert restored.model.bank.features.shape == (4, 10, 512)
    assert restored.model.bank.features.dtype == torch.float16
    assert torch.equal(restored.model.bank.features, model.model.bank.features)
    assert restored.bank_compaction == model.bank_compaction
    with torch.no_grad():
        assert torch.equal(restored.model(queries).pred_score, expected)
