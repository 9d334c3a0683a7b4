"""Which precision training runs in: bf16 where the hardware computes it natively, fp32 elsewhere.

CUDA GPUs from Ampere on compute bf16 natively. On the CPU, oneDNN runs bf16 convolutions and
matmuls natively only with the AVX-512 BF16 or AMX instructions; on other CPUs it emulates them,
slower than fp32, so those keep fp32. The CPU's flags are read at run time (machines differ).
:class:`MixedPrecisionMixin` gives the models their ``mixed_precision`` option: bf16 autocast and
channels_last tensors where :func:`native_bf16` holds.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

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


class MixedPrecisionMixin:
    """bf16 autocast and channels_last tensors where the device computes bf16 natively, fp32 elsewhere.

    The host sets ``mixed_precision`` (the option) and calls :meth:`_init_mixed_precision`; the
    decision is made once per device type (the CPU check reads ``/proc/cpuinfo``).
    """

    mixed_precision: bool
    device: torch.device

    def _init_mixed_precision(self, mixed_precision: bool) -> None:
        self.mixed_precision = mixed_precision
        self._bf16_decided_for: str | None = None  # device type the bf16 decision was made for
        self._bf16 = False

    @property
    def _use_mixed_precision(self) -> bool:
        """bf16 training on this device: decided once per device type."""
        device_type = self.device.type
        if self._bf16_decided_for != device_type:
            self._bf16 = self.mixed_precision and native_bf16(self.device)
            self._bf16_decided_for = device_type
        return self._bf16

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
