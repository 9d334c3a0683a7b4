"""Which precision training runs in: bf16 where the hardware computes it natively, fp32 elsewhere.

CUDA GPUs from Ampere on compute bf16 natively. On the CPU, oneDNN runs bf16 convolutions and
matmuls natively only with the AVX-512 BF16 or AMX instructions; on other CPUs it emulates them,
slower than fp32, so those keep fp32. The CPU's flags are read at run time (machines differ).
"""

from __future__ import annotations

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
