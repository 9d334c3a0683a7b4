"""Shared components: batched augmentations, rotations, k-NN scores, schedules, heads, encoders."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from anomalib_firm.console import InputError
from anomalib_firm.models import Firm
from anomalib_firm.models.components.backbones.encoders import build_encoder
from anomalib_firm.models.components.backbones.heads import ProjectionHead
from anomalib_firm.models.components.optimisation.learning_rate import items_per_step, scaled_learning_rate
from anomalib_firm.models.components.optimisation.schedules import OneCycleSchedule, cosine_factor, one_cycle_factor
from anomalib_firm.models.components.scoring.feature_bank import FeatureBank, cosine_topk_similarity, knn_squared_l2
from anomalib_firm.models.components.views import augmentations as aug
from anomalib_firm.models.components.views.rotations import expand_rotations
from anomalib_firm.models.image.firm.views import firm_views
from anomalib_firm.models.image.mcl.views import mcl_views
from anomalib_firm.models.image.msc.views import msc_views


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("make_views", [firm_views, msc_views, mcl_views], ids=["firm", "msc", "mcl"])
def test_views_keep_dtype_device_and_differ_per_sample(images, make_views):
    torch.manual_seed(0)
    views = make_views(16)(images)
    assert views.shape == images.shape
    assert views.dtype == images.dtype
    assert views.device == images.device
    assert views.min() >= 0
    assert views.max() <= 1
    # Same image in every row: each row must still get its own random draw.
    same = images[:1].expand(6, -1, -1, -1)
    views = make_views(16)(same)
    differences = (views[:, None] - views[None]).abs().flatten(2).amax(-1)
    off_diagonal = differences[~torch.eye(6, dtype=torch.bool)]
    assert (off_diagonal > 1e-3).all()


def test_views_output_size_and_seeded_reproducibility(images):
    torch.manual_seed(1)
    first = firm_views(24)(images)
    torch.manual_seed(1)
    second = firm_views(24)(images)
    assert first.shape == (6, 3, 24, 24)
    assert torch.equal(first, second)


def test_hue_matches_torchvision(images):
    shifts = torch.tensor([0.1, -0.2, 0.3, 0.0, -0.5, 0.45])
    expected = torch.stack([TF.adjust_hue(image, float(shift)) for image, shift in zip(images, shifts)])
    assert torch.allclose(aug.adjust_hue(images, shifts), expected, atol=1e-5)


def test_blur_matches_torchvision(images):
    blurred = aug.gaussian_blur(images, kernel_size=3, sigma=(0.8, 0.8))
    expected = TF.gaussian_blur(images, [3, 3], [0.8, 0.8])
    assert torch.allclose(blurred, expected, atol=1e-5)


def test_full_box_crop_is_identity(images):
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]]).expand(6, 4)
    assert torch.allclose(aug.crop_and_resize(images, boxes, 16), images, atol=1e-5)
    flipped = aug.crop_and_resize(images, boxes, 16, flip_horizontal=torch.ones(6, dtype=torch.bool))
    assert torch.allclose(flipped, images.flip(-1), atol=1e-5)


def test_quadrant_crop(images):
    boxes = torch.tensor([[0.5, 0.0, 0.5, 0.5]]).expand(6, 4)  # top-right quadrant, upsampled x2
    crop = aug.crop_and_resize(images, boxes, 8)  # same size as the quadrant: exact pixels
    assert torch.allclose(crop, images[:, :, :8, 8:], atol=1e-5)


def test_crop_boxes_respect_scale_and_ratio():
    boxes = aug.sample_crop_boxes(2000, (0.25, 1.0), (1.0, 1.0), torch.empty(0))
    area = boxes[:, 2] * boxes[:, 3]
    assert area.min() >= 0.25 - 1e-6
    assert area.max() <= 1 + 1e-6
    assert torch.allclose(boxes[:, 2], boxes[:, 3])
    assert (boxes[:, 0] + boxes[:, 2] <= 1 + 1e-6).all()


def test_brightness_only_jitter_matches_torchvision(images):
    torch.manual_seed(0)
    jittered = aug.color_jitter(images, brightness=0.4, contrast=0, saturation=0, hue=0)
    torch.manual_seed(0)
    factors = torch.rand(6) * 0.8 + 0.6  # the first draw of color_jitter
    expected = torch.stack([TF.adjust_brightness(image, float(f)) for image, f in zip(images, factors)])
    assert torch.allclose(jittered, expected, atol=1e-6)


def test_grayscale_probabilities(images):
    assert torch.equal(aug.random_grayscale(images, 0.0), images)
    grey = aug.random_grayscale(images, 1.0)
    assert torch.allclose(grey[:, 0], grey[:, 1])


def test_expand_rotations(images):
    rotated, ids = expand_rotations(images)
    assert rotated.shape == (24, 3, 16, 16)
    assert ids.tolist() == [0] * 6 + [1] * 6 + [2] * 6 + [3] * 6
    assert torch.equal(rotated[6], torch.rot90(images[0], 1, dims=(-2, -1)))
    with pytest.raises(ValueError, match="square"):
        expand_rotations(torch.rand(2, 3, 8, 10))


def test_knn_scores_match_naive_reference():
    generator = torch.Generator().manual_seed(0)
    queries = torch.randn(2, 5, 7, generator=generator)
    bank = torch.randn(2, 30, 7, generator=generator)
    cosine = cosine_topk_similarity(queries, bank, k=3)
    squared = knn_squared_l2(queries, bank, k=2)
    for view in range(2):
        for q in range(5):
            sims = sorted(
                (float(torch.dot(queries[view, q], b) / (queries[view, q].norm() * b.norm())) for b in bank[view]),
                reverse=True,
            )
            assert cosine[view, q].item() == pytest.approx(sum(sims[:3]) / 3, abs=1e-5)
            dists = sorted(float(((queries[view, q] - b) ** 2).sum()) for b in bank[view])
            assert squared[view, q].item() == pytest.approx(dists[0] + dists[1], rel=1e-4)


def test_feature_bank_state_dict_resizes():
    bank = FeatureBank(4, 8)
    assert bank.is_empty
    with pytest.raises(RuntimeError, match="empty"):
        bank.cosine_topk(torch.randn(4, 2, 8), 1)
    bank.update(torch.randn(4, 10, 8))
    fresh = FeatureBank(4, 8)
    fresh.load_state_dict(bank.state_dict())
    assert torch.equal(fresh.features, bank.features)
    with pytest.raises(ValueError, match="Bank expects"):
        bank.update(torch.randn(3, 10, 8))


def test_one_cycle_equals_torch_one_cycle():
    for total, warmup in [(1000, 0.01), (50, 0.1)]:
        parameter = torch.nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.SGD([parameter], lr=0.1)
        reference = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=total, pct_start=warmup)
        for step in range(total):
            assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * one_cycle_factor(step, total, warmup))
            optimizer.step()
            reference.step()


def test_one_cycle_schedule_cycles_momentum_as_torch_one_cycle():
    """FIRM's authors use OneCycleLR's defaults, which also cycle SGD momentum 0.95 -> 0.85 -> 0.95."""
    total, warmup = 200, 0.1
    ours_parameter, torch_parameter = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    ours = torch.optim.SGD([ours_parameter], lr=0.1, momentum=0.9)
    reference = torch.optim.SGD([torch_parameter], lr=0.1, momentum=0.9)
    schedule = OneCycleSchedule(ours, total, warmup, momentum_range=(0.85, 0.95))
    reference_schedule = torch.optim.lr_scheduler.OneCycleLR(reference, max_lr=0.1, total_steps=total, pct_start=warmup)
    momenta = []
    for _ in range(total):
        assert ours.param_groups[0]["lr"] == pytest.approx(reference.param_groups[0]["lr"])
        assert ours.param_groups[0]["momentum"] == pytest.approx(reference.param_groups[0]["momentum"])
        momenta.append(ours.param_groups[0]["momentum"])
        ours.step()
        reference.step()
        schedule.step()
        reference_schedule.step()
    assert momenta[0] == pytest.approx(0.95)
    assert min(momenta) == pytest.approx(0.85)
    assert momenta[-1] == pytest.approx(0.95)
    fixed = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    OneCycleSchedule(fixed, total, warmup, momentum_range=None).step()
    assert fixed.param_groups[0]["momentum"] == 0.9


def test_firm_defaults_are_the_authors():
    """The defaults a user gets with ``--model FIRM`` are the paper's / authors' code's (ALGORITHMS.md).

    One departure, measured (FIRM README): a 2-layer projection head instead of the authors' 8.
    """
    import inspect

    defaults = {name: p.default for name, p in inspect.signature(Firm).parameters.items()}
    expected = {
        "backbone": "resnet18_cifar",
        "image_size": 32,
        "head_hidden_dim": 1024,
        "head_layers": 2,
        "embedding_dim": 128,
        "temperature": 0.2,
        "loss_layout": "pairwise",
        "loss": "firm",
        "crop_scale": (0.25, 1.0),
        "jitter": 0.4,
        "blur_probability": 0.75,
        "score": "angled",
        "num_neighbors": 5,
        "eval_zoom": 36 / 32,
        "lr": 0.01,
        "scale_lr": False,
        "momentum_range": (0.85, 0.95),
        "weight_decay": 3e-4,
        "warmup_fraction": 0.01,
        "bn_momentum": 0.9,
    }
    assert {name: defaults[name] for name in expected} == expected


def test_one_cycle_defined_for_tiny_runs():
    values = [one_cycle_factor(step, 30) for step in range(30)]  # warm-up < 1 step: OneCycleLR divides by 0
    assert values[0] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert cosine_factor(0, 10) == 1.0
    assert cosine_factor(10, 10) == pytest.approx(0.0)


def test_head_and_encoders():
    head = ProjectionHead(512, 1024, 128, num_layers=8, batch_norm=True, bias=False, final_batch_norm=True)
    assert sum(isinstance(m, torch.nn.Linear) for m in head.modules()) == 8
    out = head(torch.randn(4, 512))
    assert torch.allclose(out.norm(dim=1), torch.ones(4), atol=1e-5)
    for name, dim in [("resnet18_cifar", 512), ("resnet34_cifar", 512), ("resnet18", 512)]:
        encoder, feature_dim = build_encoder(name)
        assert feature_dim == dim
        assert encoder(torch.rand(2, 3, 32, 32)).shape == (2, dim)
    with pytest.raises(ValueError, match="Unknown backbone"):  # an InputError
        build_encoder("no_such_net")


def test_encoder_names_resolve_as_for_every_backbone():
    """``resnet18`` is torchvision's network for FIRM and MCL as for MSC; ``timm:resnet18`` is timm's (same keys)."""
    torchvision_net, _ = build_encoder("resnet18")
    timm_net, _ = build_encoder("timm:resnet18")
    assert type(torchvision_net).__module__.startswith("torchvision.")
    assert type(timm_net).__module__.startswith("timm.")
    assert torchvision_net.state_dict().keys() == timm_net.state_dict().keys()  # checkpoints load either way


def test_items_per_step_counts_rotations_accumulation_devices_and_small_sets():
    datamodule = SimpleNamespace(train_batch_size=32, train_data=list(range(20)))
    trainer = SimpleNamespace(datamodule=datamodule, accumulate_grad_batches=2, world_size=3)
    assert items_per_step(trainer, "FIRM") == 4 * 20 * 2 * 3  # a set smaller than a batch gives smaller batches
    loader_only = SimpleNamespace(datamodule=None, train_dataloader=SimpleNamespace(batch_size=8))
    assert items_per_step(loader_only, "FIRM") == 32
    unknown = SimpleNamespace(datamodule=None, train_dataloader=SimpleNamespace(batch_size=None))
    with pytest.raises(InputError, match=r"FIRM scales the learning rate .*\(--model.scale_lr false\)"):
        items_per_step(unknown, "FIRM")
    assert scaled_learning_rate(0.01, 128, 32) == pytest.approx(0.04)


def test_firm_learning_rate_is_as_given_or_scaled_from_the_authors_batch():
    """Scaled: 0.01 at the authors' 32 items (8 images x 4 rotations), 0.04 at 32 images; by default as given."""
    assert Firm(image_size=16, scale_lr=True).learning_rate(32) == pytest.approx(0.01)
    assert Firm(image_size=16, scale_lr=True).learning_rate(128) == pytest.approx(0.04)
    assert Firm(image_size=16, lr=0.02).learning_rate(128) == pytest.approx(0.02)
