"""Shared helpers of the benchmark scripts: hardware line, timing, tables, normal images in memory.

Used by the benchmark and run scripts under ``tools/``; not part of the package. Run the
scripts from the repository root (``python tools/<script>.py``): Python puts ``tools/`` on
the path, so ``import _bench_common`` works.
"""

from __future__ import annotations

import os
import platform
import random
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from anomalib_firm.models.components.lifecycle.training_data import usable_cores

#: ``--data`` choices of both scripts.
DATA_CHOICES = ("fashion_mnist", "digits")


def quiet_warnings() -> None:
    """Silence the import-time deprecation noise of timm/anomalib and Lightning's log-without-trainer warning."""
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*self.log.*")
    warnings.filterwarnings("ignore", message=".*random initialisation.*")
    warnings.filterwarnings("ignore", message=".*random weights.*")


def cpu_model() -> str:
    """CPU model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def hardware_description(device: torch.device | None = None) -> str:
    """One line: CPU model, cores, threads, GPU (when CUDA is there), versions, the CPU's instruction sets."""
    parts = [
        f"CPU {cpu_model()}",
        f"{usable_cores()} usable cores (os.cpu_count {os.cpu_count()})",
        f"torch threads {torch.get_num_threads()}",
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
    ]
    if torch.cuda.is_available():
        index = device.index if device is not None and device.type == "cuda" and device.index is not None else 0
        properties = torch.cuda.get_device_properties(index)
        parts.append(f"GPU {properties.name} ({properties.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda})")
    else:
        parts.append("no GPU")
    parts.append(f"torch {torch.__version__}, Python {platform.python_version()}")
    parts.append(cpu_instruction_sets())
    return "; ".join(parts)


#: Instruction sets worth naming in a benchmark table (``/proc/cpuinfo`` flag names).
NAMED_CPU_FLAGS = (
    "avx2",
    "fma",
    "avx_vnni",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_bf16",
    "amx_int8",
)


def load_average() -> str:
    """The 1/5/15-minute load averages and the usable cores (other jobs on the machine slow every timing)."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.1f} / {five:.1f} / {fifteen:.1f} on {usable_cores()} cores"


def cpu_instruction_sets() -> str:
    """One line: the CPU's vector instruction sets, PyTorch's dispatch level and whether bf16 is native."""
    from anomalib_firm.models.components.lifecycle.precision import cpu_flags, cpu_has_native_bf16

    flags = cpu_flags()
    present = [flag for flag in NAMED_CPU_FLAGS if flag in flags] or ["(no /proc/cpuinfo flags)"]
    return (
        f"CPU instruction sets: {' '.join(present)}; torch CPU capability {torch.backends.cpu.get_cpu_capability()}; "
        f"native bf16: {'yes' if cpu_has_native_bf16() else 'no'}"
    )


def seed_all(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str | None) -> torch.device:
    """``cuda`` when available and nothing was asked for, else the named device (checked)."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        msg = "--device cuda was asked for but torch sees no CUDA device."
        raise SystemExit(msg)
    return device


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(
    step: Callable[[], object],
    device: torch.device,
    warmup: int,
    steps: int | None = None,
    min_steps: int = 3,
    min_seconds: float = 10.0,
    max_steps: int = 10_000,
) -> tuple[float, int]:
    """Time a training loop: ``(seconds, timed steps)`` after ``warmup`` untimed calls of ``step``.

    With ``steps`` given, exactly that many calls are timed; otherwise the loop runs at least
    ``min_steps`` calls and until ``min_seconds`` have passed (at most ``max_steps``). The device
    is synchronised once before and once after the timed calls, not between them, so queued CUDA
    work overlaps as in a real training loop (the stopping rule reads the host clock only; the
    returned time covers exactly the counted steps).
    """
    for _ in range(warmup):
        step()
    synchronize(device)
    start = time.perf_counter()
    done = 0
    while True:
        step()
        done += 1
        if steps is not None:
            if done >= steps:
                break
        elif done >= max_steps or (done >= min_steps and time.perf_counter() - start >= min_seconds):
            break
    synchronize(device)
    return time.perf_counter() - start, done


def time_per_call(
    call: Callable[[], object],
    device: torch.device,
    warmup: int = 1,
    min_repeats: int = 3,
    min_seconds: float = 2.0,
    max_repeats: int = 1000,
) -> float:
    """Median wall time of one call in seconds (synchronised around every call).

    Runs ``warmup`` untimed calls, then repeats until both ``min_repeats`` calls and
    ``min_seconds`` of timed calls are reached (at most ``max_repeats``).
    """
    for _ in range(warmup):
        call()
    times: list[float] = []
    while len(times) < max_repeats and (len(times) < min_repeats or sum(times) < min_seconds):
        synchronize(device)
        start = time.perf_counter()
        call()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Plain-text table: left-aligned text columns, right-aligned numbers (pre-formatted strings stay as given)."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [
        max(len(header), *(len(row[i]) for row in cells)) if cells else len(header) for i, header in enumerate(headers)
    ]

    def is_number(text: str) -> bool:
        stripped = text.rstrip("x%").replace(",", "").replace("e-", "").replace("e+", "")
        try:
            float(stripped)
        except ValueError:
            return text == "-"
        return True

    numeric = [bool(cells) and all(is_number(row[i]) for row in cells) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            value.rjust(width) if right else value.ljust(width)
            for value, width, right in zip(values, widths, numeric, strict=True)
        ).rstrip()

    separator = "  ".join("-" * width for width in widths)
    return "\n".join([line(list(headers)), separator, *(line(row) for row in cells)])


def load_normal_images(data: str, category: str, image_size: int, max_images: int) -> torch.Tensor:
    """Normal training images of a one-vs-rest data module as one uint8 tensor ``(N, 3, S, S)``.

    The first ``max_images`` training images of class ``category`` (all when fewer), grey
    repeated to 3 channels, resized once to ``image_size`` (bilinear with antialiasing).

    Args:
        data: ``fashion_mnist`` (``/usr/share/datasets/fashion-mnist``, Debian package
            ``dataset-fashion-mnist``) or ``digits`` (scikit-learn's 8x8 digits, no file).
        category: Normal class (name or index).
        image_size: Side ``S`` of the returned images.
        max_images: Cap on ``N``.
    """
    return resize_uint8(_load_split(data, category, "train", max_images)[0], image_size)


def load_test_images(data: str, category: str, image_size: int, max_images: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Test images (normal and anomalous, interleaved) as uint8 ``(N, 3, S, S)`` and their labels (1 = anomalous)."""
    images, labels = _load_split(data, category, "test", None)
    normal, anomalous = (labels == 0).nonzero().squeeze(1), (labels == 1).nonzero().squeeze(1)
    count = min(max_images // 2, len(normal), len(anomalous))
    order = torch.stack([normal[:count], anomalous[:count]], dim=1).reshape(-1)
    return resize_uint8(images[order], image_size), labels[order]


def _load_split(data: str, category: str, split: str, max_images: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Float images ``(N, 3, H, W)`` in [0, 1] and binary labels of one split of the data module."""
    from anomalib_firm.data import Digits, FashionMNIST

    if data == "fashion_mnist":
        try:
            datamodule = FashionMNIST(category=category, val_split_mode="none")
            datamodule.setup()
        except (FileNotFoundError, OSError, RuntimeError) as error:
            msg = (
                f"Fashion-MNIST not found ({error}). Install it with `apt-get install -y dataset-fashion-mnist` "
                "or use --data digits."
            )
            raise SystemExit(msg) from error
    elif data == "digits":
        datamodule = Digits(category=category, val_split_mode="none")
        datamodule.setup()
    else:
        msg = f"Unknown data set {data!r}: use one of {DATA_CHOICES}."
        raise SystemExit(msg)
    dataset = datamodule.train_data if split == "train" else datamodule.test_data
    count = len(dataset) if max_images is None else min(len(dataset), max_images)
    batch = dataset.__getitems__(list(range(count)))
    return batch.image.as_subclass(torch.Tensor).contiguous(), batch.gt_label.long()


def resize_uint8(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """Float images in [0, 1] ``(N, 3, H, W)`` -> uint8 ``(N, 3, S, S)`` (bilinear, antialiased)."""
    if images.shape[-2:] != (image_size, image_size):
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", antialias=True)
    return images.clamp(0, 1).mul(255).round().to(torch.uint8)


class Progress:
    """One line per finished job on stderr: what, its result, elapsed time and an estimate of what is left."""

    def __init__(self, total: int) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.start = time.perf_counter()

    def step(self, what: str) -> None:
        """Count one job as finished and print ``what`` with the elapsed time and the time left."""
        self.done += 1
        elapsed = time.perf_counter() - self.start
        left = elapsed / self.done * (self.total - self.done)
        print(
            f"[{self.done}/{self.total}] {what} ({elapsed / 60:.1f} min so far, about {left / 60:.1f} min left)",
            file=sys.stderr,
            flush=True,
        )
