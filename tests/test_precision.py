"""bf16 training where the hardware has it: detection, and the same seeded loss as fp32 within tolerance.

The CPU of a CI machine may lack bf16 instructions, so the detection is tested with patched CPU
flags and the loss comparison forces bf16 autocast (PyTorch emulates it on any CPU: slower there,
same numerics).
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.trainer.states import TrainerFn
from model_utils import IMAGE_SIZE, MODEL_NAMES, random_training_batch, tiny_model
from torch import nn

from anomalib_firm.models.components.lifecycle import precision

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
    # MSC's torchvision ResNet-18 strides past a 1x1 map below 32 px and keeps fp32 there (see below).
    size = 32 if name == "msc" else IMAGE_SIZE
    batch = random_training_batch(6, seed=3, image_size=size)
    torch.manual_seed(0)
    reference = tiny_model(name, with_center=True, mixed_precision=False, image_size=size)
    torch.manual_seed(0)
    mixed = tiny_model(name, with_center=True, mixed_precision=True, image_size=size)
    assert mixed.uses_mixed_precision(torch.device("cpu"))
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


@pytest.mark.parametrize(
    ("input_size", "kernel", "stride", "padding", "expected"),
    [
        ((1, 1), 3, 2, 1, True),  # ResNet's last stage on a 1x1 map
        ((2, 1), 3, 2, 1, True),
        ((2, 2), 3, 3, 1, True),
        ((1, 1), 1, 2, 0, True),  # its 1x1 shortcut (measured right, flagged with its block anyway)
        ((2, 2), 3, 2, 1, False),
        ((3, 3), 3, 3, 1, False),
        ((1, 1), 3, 1, 1, False),
    ],
)
def test_strides_past_its_input(input_size, kernel, stride, padding, expected):
    convolution = nn.Conv2d(4, 4, kernel, stride=stride, padding=padding)
    assert precision.strides_past_its_input(convolution, (2, 4, *input_size)) is expected


def test_resnet18_strides_past_its_input_below_32_px():
    model = tiny_model("msc")
    names = precision.convolutions_striding_past_their_input(model.model, model.model.embed, 16)
    assert names == ["backbone.body.layer4.0.conv1", "backbone.body.layer4.0.downsample.0"]
    assert precision.convolutions_striding_past_their_input(model.model, model.model.embed, 32) == []
    assert model.model.training  # the probe ran in eval mode and restored the mode


def poison_allocator() -> None:
    """Free NaN-filled memory of many sizes, so that memory PyTorch or oneDNN use uninitialised holds NaN."""
    big = torch.empty(8 << 20, dtype=torch.uint8)
    del big  # raises glibc's mmap threshold: the chunks below come from (and return to) the heap
    chunks = [torch.full((1 << power,), float("nan")) for power in range(6, 20) for _ in range(4)]
    del chunks


@pytest.mark.filterwarnings(r"ignore:You are trying to `self.log\(\)`")
def test_msc_below_32_px_trains_in_fp32_on_a_bf16_cpu(monkeypatch, caplog):
    """PyTorch's CPU bf16 weight gradient of a stride-2 3x3 convolution of a 1x1 map is uninitialised memory.

    MSC's ResNet-18 at 16 px has one (layer4.0.conv1). In bf16 (PyTorch 2.14.1, AVX-512 BF16 CPU)
    its weight gradient was NaN or ~1e12 times too large on the first step here (NaN-filled freed
    memory before its backward makes that reliable), while the loss stayed finite. The mixin keeps
    such a network in fp32: the gradients are fp32's.
    """
    monkeypatch.setattr(precision, "native_bf16", lambda _device: True)
    batch = random_training_batch(2, seed=3)
    torch.manual_seed(0)
    reference = tiny_model("msc", with_center=True, mixed_precision=False)
    torch.manual_seed(0)
    mixed = tiny_model("msc", with_center=True, mixed_precision=True)
    mixed.load_state_dict(reference.state_dict())
    with caplog.at_level(logging.WARNING, logger=precision.logger.name):
        mixed.prepare_training()
    assert "mixed precision off, training in fp32" in caplog.text
    assert "layer4.0.conv1" in caplog.text
    assert not mixed.uses_mixed_precision(torch.device("cpu"))
    name = "backbone.body.layer4.0.conv1"
    mixed.model.get_submodule(name).register_forward_hook(
        lambda _module, _inputs, output: output.register_hook(lambda _grad: poison_allocator()) and None
    )
    for model in (reference, mixed):
        torch.manual_seed(1)
        model.compute_loss(batch).backward()
    expected, gradient = (model.model.get_submodule(name).weight.grad for model in (reference, mixed))
    # bf16 without the bug would be ~0.2 off here (8-bit mantissa through a random ResNet); fp32 is exact
    assert torch.isfinite(gradient).all()
    assert ((gradient - expected).norm() / expected.norm()).item() < 0.5


def test_channels_last_is_applied_before_the_strategy_wraps_the_model(monkeypatch):
    """configure_model (Lightning: before DDP builds its buckets) puts the network in channels_last when fitting."""
    monkeypatch.setattr(precision, "native_bf16", lambda _device: True)
    model = tiny_model("firm", mixed_precision=True)

    def fitting(fn: TrainerFn) -> SimpleNamespace:
        return SimpleNamespace(state=SimpleNamespace(fn=fn), strategy=SimpleNamespace(root_device=torch.device("cpu")))

    def in_channels_last() -> bool:
        weights = [parameter for parameter in model.model.parameters() if parameter.dim() == 4]
        return all(weight.is_contiguous(memory_format=torch.channels_last) for weight in weights)

    model._trainer = fitting(TrainerFn.TESTING)
    model.configure_model()
    assert not in_channels_last()
    model._trainer = fitting(TrainerFn.FITTING)
    model.configure_model()
    assert in_channels_last()
