"""Which precision training runs in: bf16 where the hardware computes it natively, fp32 elsewhere.

CUDA GPUs from Ampere on compute bf16 natively. On the CPU, oneDNN runs bf16 convolutions and
matmuls natively only with the AVX-512 BF16 or AMX instructions; on other CPUs it emulates them,
slower than fp32, so those keep fp32. The CPU's flags are read at run time (machines differ).
:class:`MixedPrecisionMixin` gives the models their ``mixed_precision`` option: bf16 autocast and
channels_last tensors where :func:`native_bf16` holds, except for a network that a PyTorch CPU bug would
train wrongly in bf16 (:func:`convolutions_striding_past_their_input`), which keeps fp32.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from anomalib_firm.models.components.lifecycle.contract import LifecycleHost

logger = logging.getLogger(__name__)

#: CPU flags (``/proc/cpuinfo``) that mean bf16 arithmetic in hardware.
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """Instruction-set flags of the CPU from ``/proc/cpuinfo`` (empty where that file does not exist)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """True when the CPU has bf16 instructions and PyTorch's oneDNN can use them."""
    if not any(flag in cpu_flags() for flag in NATIVE_BF16_CPU_FLAGS):
        return False
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def native_bf16(device: torch.device) -> bool:
    """True when ``device`` computes bf16 natively (CUDA with bf16 support, or a bf16 CPU)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_has_native_bf16()
    return False


def strides_past_its_input(convolution: nn.Conv2d, input_size: tuple[int, ...]) -> bool:
    """True when ``convolution``'s stride is larger than the positions its kernel has in an input of ``input_size``.

    The number of positions along a dimension is ``size + 2 * padding - dilation * (kernel - 1)``,
    so with stride ``s`` larger than it only the first position is used: a 1x1 map into a stride-2
    3x3 convolution (ResNet's last stage at images under 32 px), a 2x2 map into stride 3.
    """
    padding = convolution.padding
    if isinstance(padding, str):  # "same" needs stride 1; "valid" is no padding
        padding = (0, 0)
    return any(
        stride > size + 2 * pad - dilation * (kernel - 1)
        for size, kernel, stride, pad, dilation in zip(
            input_size[-2:], convolution.kernel_size, convolution.stride, padding, convolution.dilation, strict=True
        )
    )


def convolutions_striding_past_their_input(
    network: nn.Module, forward: Callable[[torch.Tensor], Any], image_size: int
) -> list[str]:
    """Names (in ``network``) of the 2-D convolutions whose stride is larger than their input at ``image_size``.

    PyTorch's CPU bf16 convolution computes such a layer's weight gradient wrong: with bf16 autocast
    (channels_last or not) on an AVX-512 BF16 CPU, a stride-2 3x3 convolution of a 1x1 map gives a
    weight gradient of uninitialised memory (relative error up to 1e36 or NaN, differing from call to
    call) while its output and input gradient are right, so the loss stays finite and the weights
    silently become garbage. The wrong entries are the kernel taps that only ever see padding; NaN
    left in freed memory makes them NaN every time (oneDNN accumulates into memory it never
    cleared). Measured with PyTorch 2.14.1 on an AVX-512 BF16 CPU, in the width dimension, with
    contiguous and channels_last tensors alike; not reported upstream as such, the related forward
    bug is pytorch/pytorch#169688 (bf16 convolution whose innermost output dimension is 1 and
    strided). Checked in both dimensions here, to be safe; 1x1 kernels (measured right) too.

    The shapes come from one forward of a black ``(1, 3, image_size, image_size)`` image through
    ``forward`` (the network's training forward) in eval mode without gradients, on the device of
    ``network``; the network's mode is restored.
    """
    found: list[str] = []

    def check(name: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], None]:
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            if isinstance(module, nn.Conv2d) and strides_past_its_input(module, tuple(inputs[0].shape)):
                found.append(name)

        return hook

    handles = [module.register_forward_pre_hook(check(name)) for name, module in network.named_modules()]
    was_training = network.training
    parameter = next(network.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    try:
        network.eval()
        with torch.no_grad(), torch.autocast(device_type=device.type, enabled=False):
            forward(torch.zeros(1, 3, image_size, image_size, device=device))
    finally:
        network.train(was_training)
        for handle in handles:
            handle.remove()
    return list(dict.fromkeys(found))


class MixedPrecisionMixin(LifecycleHost):
    """bf16 autocast and channels_last tensors where the device computes bf16 natively, fp32 elsewhere.

    The host (with a network ``model`` whose ``embed`` is the training forward of
    ``(B, 3, image_size, image_size)`` views) sets ``mixed_precision`` (the option) and calls
    :meth:`_init_mixed_precision`; the decision is made once per device type, network and image
    size (the CPU check reads ``/proc/cpuinfo``). On the CPU, a network with a convolution that
    strides past its input at ``image_size`` trains in fp32, with a warning: PyTorch computes its
    weight gradient wrong in bf16 (see :func:`convolutions_striding_past_their_input`).
    """

    mixed_precision: bool
    image_size: int

    def _init_mixed_precision(self, mixed_precision: bool) -> None:
        self.mixed_precision = mixed_precision
        self._bf16_decided_for: tuple[str, int, int] | None = None  # (device type, network, image size)
        self._bf16 = False

    def mixed_precision_probe(self, images: torch.Tensor) -> None:
        """The network's training forward, run once on a black image to see the shapes its layers get."""
        self.model.embed(images)

    def uses_mixed_precision(self, device: torch.device) -> bool:
        """Whether training on ``device`` runs under bf16 autocast with channels_last tensors."""
        key = (device.type, id(self.model), self.image_size)
        if self._bf16_decided_for != key:
            self._bf16 = self.mixed_precision and native_bf16(device) and not self._bf16_breaks_weight_gradients(device)
            self._bf16_decided_for = key
        return self._bf16

    def _bf16_breaks_weight_gradients(self, device: torch.device) -> bool:
        """True (with a warning) on the CPU for a network that strides past a 1x1 map at ``image_size``."""
        if device.type != "cpu":
            return False
        layers = convolutions_striding_past_their_input(self.model, self.mixed_precision_probe, self.image_size)
        if layers:
            logger.warning(
                "%s: mixed precision off, training in fp32: at image_size=%d the convolution(s) %s stride past "
                "their input (e.g. a 1x1 map into a stride-2 3x3), whose weight gradient PyTorch's CPU bf16 "
                "convolution computes wrong. A larger image_size (each stride-2 stage halves the map) trains in bf16.",
                getattr(self, "name", type(self).__name__),
                self.image_size,
                ", ".join(layers),
            )
        return bool(layers)

    @property
    def _use_mixed_precision(self) -> bool:
        """bf16 training on this device: :meth:`uses_mixed_precision` of ``self.device``."""
        return self.uses_mixed_precision(self.device)

    def put_in_training_memory_format(self, device: torch.device) -> None:
        """channels_last network where training on ``device`` uses mixed precision (converts once)."""
        if not self.uses_mixed_precision(device):
            return
        if any(
            not parameter.is_contiguous(memory_format=torch.channels_last)
            for parameter in self.model.parameters()
            if parameter.dim() == 4
        ):
            self.model.to(memory_format=torch.channels_last)

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast when ``mixed_precision`` and the device computes bf16 natively; a no-op elsewhere."""
        if self._use_mixed_precision:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def as_input(self, images: torch.Tensor) -> torch.Tensor:
        """Images in the memory format the network was put in."""
        if self._use_mixed_precision:
            return images.contiguous(memory_format=torch.channels_last)
        return images
