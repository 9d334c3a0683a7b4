"""bf16 training where the hardware has it: detection, and the same seeded loss as fp32 within tolerance.

The CPU of a CI machine may lack bf16 instructions, so the detection is tested with patched CPU
flags and the loss comparison forces bf16 autocast (PyTorch emulates it on any CPU: slower there,
same numerics).
"""

from __future__ import annotations

import warnings

import pytest
import torch

from anomalib_firm.data.batch import OneVsRestImageBatch
from anomalib_firm.models import Firm, Mcl, Msc
from anomalib_firm.models.components import base_module, precision

IMAGE_SIZE = 16
#: bf16 keeps 8 mantissa bits (relative rounding 2^-9 per operation); through a ResNet-18 and a
#: temperature-scaled softmax the loss moves by well under 2 %.
LOSS_RELATIVE_TOLERANCE = 0.02


def _batch(count: int = 6) -> OneVsRestImageBatch:
    generator = torch.Generator().manual_seed(3)
    return OneVsRestImageBatch(
        image=torch.rand(count, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator),
        gt_label=torch.zeros(count, dtype=torch.long),
        class_label=torch.zeros(count, dtype=torch.long),
        image_path=[f"x/{index}.png" for index in range(count)],
    )


def _firm(mixed_precision: bool) -> Firm:
    return Firm(
        image_size=IMAGE_SIZE, head_hidden_dim=64, head_layers=2, mixed_precision=mixed_precision, visualizer=False
    )


def _mcl(mixed_precision: bool) -> Mcl:
    return Mcl(
        backbone="resnet18_cifar",
        image_size=IMAGE_SIZE,
        head_hidden_dim=64,
        mixed_precision=mixed_precision,
        visualizer=False,
    )


def _msc(mixed_precision: bool) -> Msc:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*MSC needs ImageNet pretraining")
        model = Msc(
            backbone="resnet18",
            weights="random",
            image_size=IMAGE_SIZE,
            mixed_precision=mixed_precision,
            visualizer=False,
        )
    model.model.set_center(torch.nn.functional.normalize(torch.ones(model.model.feature_dim), dim=0))
    return model


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"avx512f", "avx512_bf16"}, True),
        ({"avx2", "amx_bf16", "amx_tile"}, True),
        ({"avx2", "fma"}, False),
        (set(), False),
    ],
)
def test_native_bf16_on_the_cpu_follows_its_flags(monkeypatch, flags, expected):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert precision.native_bf16(torch.device("cpu")) is expected


def test_mixed_precision_is_fp32_on_a_cpu_without_bf16(monkeypatch):
    monkeypatch.setattr(base_module, "native_bf16", lambda _device: False)
    model = _firm(mixed_precision=True)
    with model.autocast():
        assert not torch.is_autocast_cpu_enabled()
    assert model.as_input(torch.rand(2, 3, 4, 4)).is_contiguous()


@pytest.mark.filterwarnings(r"ignore:You are trying to `self.log\(\)`")
@pytest.mark.parametrize("build", [_firm, _mcl, _msc], ids=["firm", "mcl", "msc"])
def test_bf16_step_matches_fp32_loss_and_trains(monkeypatch, build):
    """Same weights, same seeded views: the bf16 loss is within tolerance of fp32, and a bf16 step learns."""
    monkeypatch.setattr(base_module, "native_bf16", lambda _device: True)
    batch = _batch()
    torch.manual_seed(0)
    reference = build(mixed_precision=False)
    torch.manual_seed(0)
    mixed = build(mixed_precision=True)
    mixed.load_state_dict(reference.state_dict())
    mixed.model.to(memory_format=torch.channels_last)  # as on_fit_start does
    losses = {}
    for name, model in (("fp32", reference), ("bf16", mixed)):
        torch.manual_seed(1)
        losses[name] = model.compute_loss(batch)
    assert losses["bf16"].dtype == torch.float32
    assert torch.isfinite(losses["bf16"])
    relative = abs(losses["bf16"].item() - losses["fp32"].item()) / abs(losses["fp32"].item())
    assert relative < LOSS_RELATIVE_TOLERANCE, losses

    optimizer = torch.optim.SGD(mixed.parameters(), lr=0.05)
    before = [parameter.detach().clone() for parameter in mixed.parameters() if parameter.requires_grad]
    losses["bf16"].backward()
    optimizer.step()
    after = [parameter.detach() for parameter in mixed.parameters() if parameter.requires_grad]
    assert all(parameter.dtype == torch.float32 for parameter in after)  # master weights stay fp32
    assert any(not torch.equal(old, new) for old, new in zip(before, after, strict=True))
