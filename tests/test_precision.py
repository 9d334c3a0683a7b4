"""bf16 training where the hardware has it: detection, and the same seeded loss as fp32 within tolerance.

The CPU of a CI machine may lack bf16 instructions, so the detection is tested with patched CPU
flags and the loss comparison forces bf16 autocast (PyTorch emulates it on any CPU: slower there,
same numerics).
"""

from __future__ import annotations

import pytest
import torch
from model_utils import MODEL_NAMES, random_training_batch, tiny_model

from anomalib_firm.models.components import precision

#: bf16 keeps 8 mantissa bits (relative rounding 2^-9 per operation); through a ResNet-18 and a
#: temperature-scaled softmax the loss moves by well under 2 %.
LOSS_RELATIVE_TOLERANCE = 0.02


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
    monkeypatch.setattr(precision, "native_bf16", lambda _device: False)
    model = tiny_model("firm", mixed_precision=True)
    with model.autocast():
        assert not torch.is_autocast_cpu_enabled()
    assert model.as_input(torch.rand(2, 3, 4, 4)).is_contiguous()


@pytest.mark.filterwarnings(r"ignore:You are trying to `self.log\(\)`")
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_bf16_step_matches_fp32_loss_and_trains(monkeypatch, name):
    """Same weights, same seeded views: the bf16 loss is within tolerance of fp32, and a bf16 step learns."""
    monkeypatch.setattr(precision, "native_bf16", lambda _device: True)
    batch = random_training_batch(6, seed=3)
    torch.manual_seed(0)
    reference = tiny_model(name, with_center=True, mixed_precision=False)
    torch.manual_seed(0)
    mixed = tiny_model(name, with_center=True, mixed_precision=True)
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
