"""Training throughput of FIRM, MCL and MSC: this package's pipeline vs a paper-style pipeline.

Protocol. For every model and batch size, two pipelines train the SAME network (built twice by the
package's Lightning model, same seed) with the SAME loss and the same SGD settings, for
``--warmup`` untimed steps and then timed steps: ``--steps`` if given, else at least
``--min-steps`` and until ``--min-seconds`` have passed (the device is synchronised before and
after the timed steps only). Only the hot path is timed: no Trainer, no logging, no validation.

* ours: the Lightning model's own ``compute_loss(batch)`` then ``backward`` and an SGD step. The
  normal training images are one uint8 tensor on the device, resized once to the image size; a
  step gathers a batch with one index (a fresh on-device permutation per epoch) and converts it
  to float; ``compute_loss`` makes the rotations and both views on the device over the whole
  batch; where the device computes bf16 natively (CUDA; CPUs with AVX-512 BF16 or AMX) the model
  is channels_last and runs under bf16 autocast (the model's ``mixed_precision``), elsewhere fp32.
* ours fp32: the same with ``mixed_precision=False`` (only where "ours" runs in bf16): the gain of
  bf16 alone.
* ours compiled (``--compiled``): "ours" with ``compile_step=True`` (``torch.compile`` of
  rotations, views, network and loss); the compilation happens in the untimed warm-up steps.
* paper-style: how the authors' code feeds the network. A torch Dataset of PIL images (the same
  images at the same size) with per-image torchvision transforms as the papers list them, in a
  DataLoader with ``--workers`` worker processes (pinned memory on CUDA); rotations per image in
  the dataset; fp32, eager, standard memory format; normalisation in the transforms.
  - FIRM: a dataset of 4n items (every image and its 90/180/270 degree rotations as PIL images,
    shuffled together); per view RandomResizedCrop(scale 0.25-1, square) -> ColorJitter(0.4 x 4)
    -> GaussianBlur(3, sigma 0.1-2) p 0.75 -> ToTensor -> Normalize(CIFAR).
  - MCL: every item returns its 4 rotations; per view a horizontal flip p 0.5 of the base image,
    the rotation, RandomResizedCrop(scale 0.08-1) -> ColorJitter(0.4, 0.4, 0.4, 0.1) p 0.8 ->
    RandomGrayscale p 0.2 -> ToTensor (no normalisation). The loss is the naive per-row reference
    (``tools/_mcl_per_row_loss.py``), as the authors' code loops over rows.
  - MSC: MoCo-v2 views: RandomResizedCrop(scale 0.2-1) -> ColorJitter(0.4, 0.4, 0.4, 0.1) p 0.8
    -> RandomGrayscale p 0.2 -> PIL GaussianBlur(radius 0.1-2) p 0.5 -> RandomHorizontalFlip ->
    ToTensor -> Normalize(ImageNet). Backbone EfficientNet-Lite0 with the package's ImageNet
    weights; ResNet-152 (random weights: the speed does not depend on them) by default on CUDA.

Items: FIRM and MCL count rotated items (4 per image, the batch sizes are in items too), MSC
counts images. The table gives items/s of both pipelines and the ratio ours / paper-style; on
CUDA also the peak GPU memory of each pipeline. "input alone" times each pipeline's input part
without the network (paper-style: iterating its DataLoader; ours: gather, rotations, both views):
it shows which part bounds the training rate. Defaults depend on the device (printed):
CUDA: 10 warm-up steps, then at least 20 steps and 10 s; FIRM batches 32 and 512 items, MCL 1024
items, MSC 224 px, 64 images, EfficientNet-Lite0 and ResNet-152. CPU: 1 warm-up step, then at
least 3 steps and 10 s; FIRM 32 items, MCL 32 items, MSC 64 px, 64 images, EfficientNet-Lite0.

On the CPU both pipelines are bound by the network's forward/backward, so expect a ratio near 1:
the batched on-device pipeline is built for accelerators. The paper-style workers are extra
processes: on a CPU shared with other jobs they get an extra share of the cores, which favours
that pipeline; take CPU numbers on an idle machine.

Usage (from the repository root)::

    OMP_NUM_THREADS=2 python tools/benchmark_training_speed.py --device cpu
    python tools/benchmark_training_speed.py --device cuda --models firm msc --firm-batch 32 256 1024
"""

from __future__ import annotations

import argparse
import gc
import math
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_common as common
from _speed_recipes import RECIPES, to_pil

from anomalib_firm.models.components.lifecycle.precision import native_bf16
from anomalib_firm.registry import model_names

MODELS = model_names()


# --------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class Case:
    """One benchmarked configuration.

    Attributes:
        model: ``firm``, ``mcl`` or ``msc``.
        backbone: Network name as the Lightning model takes it.
        image_size: Side of the network input.
        batch_items: Items per step (rotated items for FIRM/MCL, images for MSC).
    """

    model: str
    backbone: str
    image_size: int
    batch_items: int

    @property
    def images_per_step(self) -> int:
        """Source images per step (FIRM and MCL make 4 rotated items of each)."""
        return self.batch_items // RECIPES[self.model].items_per_image

    @property
    def label(self) -> str:
        """Model column of the table."""
        return f"{self.model.upper()} {self.backbone}"


@dataclass
class Result:
    """Measured throughput of one pipeline on one case."""

    case: Case
    pipeline: str
    device: torch.device
    items_per_second: float
    peak_memory_gib: float | None
    last_loss: float
    steps: int = 0
    error: str | None = None
    input_items_per_second: float | None = None
    bf16: bool = False  # trained under bf16 autocast (the model may keep fp32, see precision.py)


def build_module(case: Case, mixed_precision: bool = True, compile_step: bool = False) -> nn.Module:
    """The package's Lightning model of ``case`` (no post-processing/evaluation components)."""
    options: dict[str, Any] = {
        "post_processor": False,
        "evaluator": False,
        "visualizer": False,
        "mixed_precision": mixed_precision,
        "compile_step": compile_step,
    }
    return RECIPES[case.model].build(case.backbone, case.image_size, options)


def build_optimizer(module: nn.Module, case: Case) -> torch.optim.Optimizer:
    """The model's own SGD settings (no schedule: it costs nothing per step)."""
    parameters = [parameter for parameter in module.model.parameters() if parameter.requires_grad]
    recipe = RECIPES[case.model]
    lr, nesterov = recipe.learning_rate(module, case.batch_items), recipe.nesterov
    return torch.optim.SGD(
        parameters, lr=lr, momentum=module.momentum, weight_decay=module.weight_decay, nesterov=nesterov
    )


# --------------------------------------------------------------------------- ours
class IndexStream:
    """Batches of indices from on-device random permutations (epoch by epoch, no host sync)."""

    def __init__(self, size: int, batch: int, device: torch.device) -> None:
        self.size, self.batch, self.device = size, batch, device
        self.buffer = torch.empty(0, dtype=torch.long, device=device)
        self.available = 0

    def next(self) -> torch.Tensor:
        """The next ``batch`` indices (a new permutation is appended whenever the current runs out)."""
        while self.available < self.batch:
            self.buffer = torch.cat([self.buffer, torch.randperm(self.size, device=self.device)])
            self.available += self.size
        indices, self.buffer = self.buffer[: self.batch], self.buffer[self.batch :]
        self.available -= self.batch
        return indices


def ours_step(module: nn.Module, case: Case, images: torch.Tensor, device: torch.device) -> Callable[[], torch.Tensor]:
    """One training step of the package's pipeline: gather, ``compute_loss``, backward, SGD."""
    optimizer = build_optimizer(module, case)
    stream = IndexStream(len(images), case.images_per_step, device)

    def step() -> torch.Tensor:
        batch = types.SimpleNamespace(image=images[stream.next()].float().div_(255))
        loss = module.compute_loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def ours_input_step(module: nn.Module, case: Case, images: torch.Tensor, device: torch.device) -> Callable[[], object]:
    """The input part of :func:`ours_step` alone: gather, rotations (FIRM/MCL), two views per item."""
    from anomalib_firm.models.components.views.rotations import expand_rotations

    stream = IndexStream(len(images), case.images_per_step, device)

    def step() -> torch.Tensor:
        batch = images[stream.next()].float().div_(255)
        items = expand_rotations(batch)[0] if RECIPES[case.model].items_per_image == 4 else batch
        with torch.no_grad():
            return torch.cat([module.views(items), module.views(items)])

    return step


# --------------------------------------------------------------------------- paper-style
def paper_loader(case: Case, images: torch.Tensor, total_steps: int, workers: int, device: torch.device) -> DataLoader:
    """DataLoader of the paper-style dataset, shuffled, enough batches for ``total_steps``."""
    recipe = RECIPES[case.model]
    dataset, batch = recipe.paper_dataset(to_pil(images), recipe.paper_transform(case.image_size), case.batch_items)
    sampler = RandomSampler(dataset, num_samples=total_steps * batch)
    return DataLoader(
        dataset,
        batch_size=batch,
        sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
    )


def paper_step(module: nn.Module, case: Case, loader: DataLoader, device: torch.device) -> Callable[[], torch.Tensor]:
    """One training step of the paper-style pipeline: next loader batch, network, loss, backward, SGD."""
    optimizer = build_optimizer(module, case)
    batches = iter(loader)

    def loss_of(batch: Any) -> torch.Tensor:
        return RECIPES[case.model].paper_loss(module, batch, device)

    def step() -> torch.Tensor:
        loss = loss_of(next(batches))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def paper_input_step(loader: DataLoader, device: torch.device) -> Callable[[], object]:
    """The input part of :func:`paper_step` alone: the next loader batch, moved to the device."""
    batches = iter(loader)

    def step() -> list[torch.Tensor]:
        return [tensor.to(device, non_blocking=True) for tensor in next(batches)]

    return step


# --------------------------------------------------------------------------- measuring
def measure(case: Case, pipeline: str, normal: torch.Tensor, args: argparse.Namespace, device: torch.device) -> Result:
    """Build a fresh model and time one pipeline on one case."""
    common.seed_all(args.seed)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    module = build_module(case, mixed_precision=pipeline != "ours fp32", compile_step=pipeline == "ours compiled")
    module = module.to(device).train()
    RECIPES[case.model].prepare(module, normal, device)
    if pipeline.startswith("ours"):
        module.prepare_training()  # what on_fit_start does under a Trainer: channels_last, compilation
        step = ours_step(module, case, normal.to(device), device)
    else:
        loader = paper_loader(case, normal, args.warmup + (args.steps or args.max_steps), args.workers, device)
        step = paper_step(module, case, loader, device)
    losses: list[torch.Tensor] = []
    seconds, steps = common.time_steps(
        lambda: losses.append(step()),
        device,
        args.warmup,
        steps=args.steps,
        min_steps=args.min_steps,
        min_seconds=args.min_seconds,
        max_steps=args.max_steps,
    )
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    result = Result(case, pipeline, device, steps * case.batch_items / seconds, peak, float(losses[-1]), steps)
    result.bf16 = pipeline.startswith("ours") and module.uses_mixed_precision(device)
    # The input pipeline alone (no network): the rate it could feed at most.
    if pipeline.startswith("ours"):
        input_step = ours_input_step(module, case, normal.to(device), device)
    else:
        loader = paper_loader(case, normal, args.warmup + args.max_steps, args.workers, device)
        input_step = paper_input_step(loader, device)
    input_seconds, input_steps = common.time_steps(
        input_step,
        device,
        args.warmup,
        min_steps=args.min_steps,
        min_seconds=args.min_seconds / 2,
        max_steps=args.max_steps,
    )
    result.input_items_per_second = input_steps * case.batch_items / input_seconds
    return result


def parse_args() -> argparse.Namespace:
    """Command line; device-dependent defaults are filled in after parsing."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--data", choices=common.DATA_CHOICES, default="fashion_mnist")
    parser.add_argument("--category", default="0", help="normal class (name or index)")
    parser.add_argument("--max-images", type=int, default=2048, help="normal training images held (first N)")
    parser.add_argument("--steps", type=int, default=None, help="exact number of timed steps (default: adaptive)")
    parser.add_argument("--min-steps", type=int, default=None, help="adaptive: at least (default: 20 CUDA, 3 CPU)")
    parser.add_argument("--min-seconds", type=float, default=10.0, help="adaptive: time at least this long")
    parser.add_argument("--max-steps", type=int, default=1000, help="adaptive: at most this many timed steps")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 10 CUDA, 1 CPU)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the paper-style pipeline")
    parser.add_argument("--firm-image-size", type=int, default=32)
    parser.add_argument("--mcl-image-size", type=int, default=32)
    parser.add_argument("--msc-image-size", type=int, default=None, help="default: 224 on CUDA, 64 on CPU")
    parser.add_argument("--firm-backbone", default="resnet18_cifar")
    parser.add_argument("--mcl-backbone", default="resnet34_cifar")
    parser.add_argument(
        "--msc-backbones",
        nargs="+",
        default=None,
        help="default: efficientnet_lite0 (package ImageNet weights) and, on CUDA, resnet152 (random weights)",
    )
    parser.add_argument(
        "--firm-batch",
        type=int,
        nargs="+",
        default=None,
        help="items per step (paper: 32); default: CUDA 32 512, CPU 32",
    )
    parser.add_argument(
        "--mcl-batch",
        type=int,
        nargs="+",
        default=None,
        help="items per step (paper: 1024); default: CUDA 1024, CPU 32",
    )
    parser.add_argument("--msc-batch", type=int, nargs="+", default=[64], help="images per step (paper: 64)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--compiled",
        action="store_true",
        help="add an 'ours compiled' row (compile_step=True; the compilation runs in the warm-up, untimed)",
    )
    args = parser.parse_args()
    cuda = (args.device or ("cuda" if torch.cuda.is_available() else "cpu")) == "cuda"
    defaults = {
        "min_steps": 20 if cuda else 3,
        "warmup": 10 if cuda else 1,
        "msc_image_size": 224 if cuda else 64,
        "msc_backbones": ["efficientnet_lite0", "resnet152"] if cuda else ["efficientnet_lite0"],
        "firm_batch": [32, 512] if cuda else [32],
        "mcl_batch": [1024] if cuda else [32],
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name in ("firm_batch", "mcl_batch"):
        if any(batch % 4 or batch < 8 for batch in getattr(args, name)):
            parser.error(f"--{name.replace('_', '-')}: items per step must be multiples of 4, at least 8")
    return args


def cases_of(args: argparse.Namespace) -> list[Case]:
    """All (model, backbone, batch) combinations asked for."""
    cases: list[Case] = []
    for model in args.models:
        cases += [Case(model, *case) for case in RECIPES[model].cases(args)]
    return cases


def main() -> None:
    """Run every case with both pipelines and print the table."""
    common.quiet_warnings()
    args = parse_args()
    device = common.resolve_device(args.device)
    bf16 = native_bf16(device)
    print(common.hardware_description(device))
    timed = (
        f"{args.steps} timed steps"
        if args.steps
        else f">= {args.min_steps} timed steps and >= {args.min_seconds:g} s (<= {args.max_steps} steps)"
    )
    print(
        f"data {args.data} class {args.category}; {args.warmup} warm-up steps, then {timed}; "
        f"paper-style DataLoader workers {args.workers}; seed {args.seed}; "
        f"ours: {'bf16 autocast + channels_last' if bf16 else 'fp32'}, paper-style: fp32",
        flush=True,
    )
    pipelines = ("ours", "ours fp32", "paper-style") if bf16 else ("ours", "paper-style")
    if args.compiled:
        pipelines = ("ours compiled", *pipelines)
    results: list[Result] = []
    images_by_size: dict[int, torch.Tensor] = {}
    for case in cases_of(args):
        if case.image_size not in images_by_size:
            images_by_size[case.image_size] = common.load_normal_images(
                args.data, args.category, case.image_size, args.max_images
            )
        normal = images_by_size[case.image_size]
        for pipeline in pipelines:
            try:
                result = measure(case, pipeline, normal, args, device)
            except Exception as error:  # a failing case is reported, the others still run
                result = Result(
                    case, pipeline, device, math.nan, None, math.nan, error=f"{type(error).__name__}: {error}"
                )
            results.append(result)
            gc.collect()
            status = result.error or f"{result.items_per_second:.1f} items/s, last loss {result.last_loss:.4f}"
            print(f"  {case.label} batch {case.batch_items} {pipeline}: {status}", flush=True)
    print()
    print(render(results, device, max((len(images) for images in images_by_size.values()), default=0)))


def render(results: list[Result], device: torch.device, num_images: int) -> str:
    """The result table (ratio = ours / paper-style items/s of the same case)."""
    cuda = device.type == "cuda"
    headers = [
        "model",
        "pipeline",
        "device",
        "image",
        "batch (items)",
        "steps",
        "items/s",
        "precision",
        "ours/paper",
        "input alone items/s",
    ]
    if cuda:
        headers.append("peak GPU GiB")
    speed = {(result.case, result.pipeline): result.items_per_second for result in results}
    rows = []
    for result in results:
        ratio = "-"
        if result.pipeline.startswith("ours"):
            paper = speed.get((result.case, "paper-style"), math.nan)
            if paper > 0 and not math.isnan(result.items_per_second):
                ratio = f"{result.items_per_second / paper:.1f}x"
        row: list[object] = [
            result.case.label,
            result.pipeline,
            str(result.device),
            result.case.image_size,
            result.case.batch_items,
            result.steps,
            "failed" if result.error else f"{result.items_per_second:.1f}",
            "bf16" if result.bf16 else "fp32",
            ratio,
            "-" if result.input_items_per_second is None else f"{result.input_items_per_second:.0f}",
        ]
        if cuda:
            row.append("-" if result.peak_memory_gib is None else f"{result.peak_memory_gib:.2f}")
        rows.append(row)
    table = common.format_table(headers, rows)
    notes = [
        f"FIRM/MCL items = rotated items (4 per image); MSC items = images. Normal images held: {num_images}.",
        "input alone: the same pipeline's batches and views without the network (paper-style: the DataLoader "
        "iterated; ours: gather, rotations, two views per item), the most it could feed the network.",
    ]
    notes += [f"{r.case.label} {r.pipeline}: {r.error}" for r in results if r.error]
    notes += [
        f"{r.case.label} {r.pipeline}: non-finite loss {r.last_loss} (the speed is still measured)"
        for r in results
        if not r.error and not math.isfinite(r.last_loss)
    ]
    return "\n".join([table, *notes])


if __name__ == "__main__":
    main()
