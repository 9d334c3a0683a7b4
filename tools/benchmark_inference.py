"""CPU inference speed of FIRM, MSC and MCL: eager PyTorch vs the OpenVINO export, and their score agreement.

Protocol. For every model: build the package's Lightning model (post-processor off, so both
backends return the raw anomaly score), fit its scorer on the first ``--bank-images`` normal
training images of the data set (the network is untrained: speed does not depend on the weights,
and the score comparison only needs a fitted scorer), then

* eager: ``model(images)`` (pre-processor + torch model, as exported) in eval mode under
  ``torch.no_grad()``, with ``torch.get_num_threads()`` threads;
* OpenVINO: export with anomalib's ``model.to_openvino(..., input_size=(S, S))`` (ONNX with a
  dynamic batch dimension, then OpenVINO IR, fp32 weights) into a temporary folder, load with
  ``anomalib.deploy.OpenVINOInferencer(device="CPU", config={"INFERENCE_PRECISION_HINT": "f32"})``
  and time ``inferencer.predict(batch)`` (if an IR ever has a static batch, it is reshaped per batch
  size and compiled with OpenVINO directly; the settings line says which).

Both backends score the same test images (normal and anomalous, interleaved) at batch 1 and
batch 32 (``--batch-sizes``); all eager measurements come first, before the export and before
OpenVINO compiles the model, so the two thread pools never compete. Per measurement: one warm-up
call, then the median of at least ``--min-repeats`` calls lasting at least ``--min-seconds`` in
total. The table gives images/s, the speed-up of OpenVINO over eager at the same batch size, and
the largest absolute score difference between the backends on the same images, in batches of
that size (at most 8 batches), also relative to the spread of the eager scores. Settings per
model: image size, backbone, scorer and bank size. Nothing is written to the repository: the
export and OpenVINO's ``openvino_cache/`` live in a temporary folder.

Defaults: FIRM ResNet-18 (CIFAR stem) at 32 px with the ``angled`` score (4 rotations); MSC
EfficientNet-Lite0 (the package's ImageNet weights) at 224 px; MCL ResNet-34 (CIFAR stem) at
32 px with SEI (8 views); bank of 256 Fashion-MNIST images of class 0; 32 test images.

Usage (from the repository root)::

    OMP_NUM_THREADS=2 python tools/benchmark_inference.py
    OMP_NUM_THREADS=2 python tools/benchmark_inference.py --models firm --data digits --batch-sizes 1 8 32
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_common as common

from anomalib_firm.models.components.base_module import NormalBatch

MODELS = ("firm", "msc", "mcl")
CPU = torch.device("cpu")


@dataclass
class Row:
    """One (model, backend, batch) measurement."""

    model: str
    backend: str
    batch: int
    images_per_second: float
    max_difference: float | None = None
    relative_difference: float | None = None


@dataclass
class ModelReport:
    """Rows and settings of one model (or the error that stopped it)."""

    name: str
    settings: str = ""
    rows: list[Row] = field(default_factory=list)
    error: str | None = None


def build_module(name: str, args: argparse.Namespace) -> tuple[nn.Module, int, str]:
    """The Lightning model, its image size and a description of its settings (scorer added later)."""
    from anomalib_firm.models import Firm, Mcl, Msc

    off: dict[str, Any] = {"post_processor": False, "evaluator": False, "visualizer": False}
    if name == "firm":
        module = Firm(backbone="resnet18_cifar", image_size=args.firm_image_size, score=args.firm_score, **off)
        return module, args.firm_image_size, f"resnet18_cifar, score {args.firm_score}"
    if name == "msc":
        module = Msc(
            backbone="efficientnet_lite0", weights="efficientnet-lite0-package", image_size=args.msc_image_size, **off
        )
        return module, args.msc_image_size, "efficientnet_lite0 (package ImageNet weights), k-NN k=2"
    module = Mcl(backbone="resnet34_cifar", image_size=args.mcl_image_size, **off)
    return module, args.mcl_image_size, "resnet34_cifar, SEI (8 views, harmonic mean)"


def fit_scorer(name: str, module: nn.Module, normal: torch.Tensor, batch: int = 64) -> str:
    """Fit the model's scorer on ``normal`` (uint8) in eval mode; return a description of the bank."""
    module.eval()

    def batches() -> Iterator[torch.Tensor]:
        for start in range(0, len(normal), batch):
            yield normal[start : start + batch].float().div(255)

    with torch.no_grad():
        module.fit_scorer(NormalBatch(images) for images in batches())  # one-class: no class labels
    count = len(normal)
    if name == "firm":
        return f"bank 4 rotations x {count} images x {module.model.bank.features.shape[-1]}-d"
    if name == "msc":
        return f"bank {count} images x {module.model.feature_dim}-d"
    return f"Gaussians 1 class x 4 rotations, 128-d, fitted on {count} images"


def eager_scores(module: nn.Module, images: torch.Tensor) -> np.ndarray:
    """Raw anomaly scores of the eager model (eval, no grad)."""
    with torch.no_grad():
        return module(images).pred_score.reshape(-1).numpy()


class OpenVinoScorer:
    """OpenVINO scoring of the exported IR: the anomalib inferencer, or a per-batch compiled model if static."""

    def __init__(self, xml: Path, workdir: Path) -> None:
        import openvino as ov

        self.xml = xml
        self.workdir = workdir
        self.config = {"INFERENCE_PRECISION_HINT": "f32"}
        self.core = ov.Core()
        self.model = self.core.read_model(xml)
        self.dynamic_batch = self.model.input(0).get_partial_shape()[0].is_dynamic
        self.inferencer: Any = None
        self.compiled: dict[int, Any] = {}
        if self.dynamic_batch:
            from anomalib.deploy import OpenVINOInferencer

            with WorkingDirectory(workdir):  # the inferencer creates ./openvino_cache
                self.inferencer = OpenVINOInferencer(xml, device="CPU", config=self.config)

    @property
    def threads(self) -> str:
        """OpenVINO's CPU inference threads."""
        compiled = self.inferencer.model if self.inferencer is not None else next(iter(self.compiled.values()), None)
        if compiled is None:
            return "?"
        try:
            return str(compiled.get_property("INFERENCE_NUM_THREADS"))
        except RuntimeError:
            return "?"

    def predictor(self, batch: int) -> Callable[[torch.Tensor], np.ndarray]:
        """Scoring function for images of ``batch`` size."""
        if self.inferencer is not None:
            return lambda images: self.inferencer.predict(images).pred_score.reshape(-1)
        if batch not in self.compiled:
            model = self.core.read_model(self.xml)
            shape = list(model.input(0).get_partial_shape().to_shape())
            model.reshape({model.input(0).any_name: [batch, *shape[1:]]})
            self.compiled[batch] = self.core.compile_model(model, "CPU", self.config)
        compiled = self.compiled[batch]
        output = next(port for port in compiled.outputs if "pred_score" in port.names)
        return lambda images: compiled(images.numpy())[output].reshape(-1)


class WorkingDirectory:
    """Context manager that runs its block in ``path`` and returns to the previous directory (``contextlib.chdir``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.previous = Path.cwd()

    def __enter__(self) -> None:
        self.previous = Path.cwd()
        os.chdir(self.path)

    def __exit__(self, *exc_info: object) -> None:
        os.chdir(self.previous)


def export_openvino(module: nn.Module, export_root: Path, image_size: int) -> Path:
    """``module.to_openvino`` with the exporter's console output kept back (shown only if it fails)."""
    output = io.StringIO()
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            return Path(module.to_openvino(export_root, input_size=(image_size, image_size)))
    except Exception:
        sys.stderr.write(output.getvalue()[-5000:])
        raise


def chunks(images: torch.Tensor, batch: int, limit: int) -> list[torch.Tensor]:
    """Up to ``limit`` full batches of ``batch`` images."""
    return [images[start : start + batch] for start in range(0, len(images) - batch + 1, batch)][:limit]


def benchmark_model(name: str, args: argparse.Namespace, workdir: Path) -> ModelReport:
    """Fit, export, time and compare one model."""
    report = ModelReport(name.upper())
    common.seed_all(args.seed)
    module, image_size, description = build_module(name, args)
    module = module.to(CPU).eval()
    normal = common.load_normal_images(args.data, args.category, image_size, args.bank_images)
    bank = fit_scorer(name, module, normal)
    test_uint8, _ = common.load_test_images(args.data, args.category, image_size, args.test_images)
    test = test_uint8.float().div(255)
    if len(test) < max(args.batch_sizes):
        msg = f"only {len(test)} test images for batch {max(args.batch_sizes)}: raise --test-images"
        raise ValueError(msg)

    # Eager first, all batch sizes, before OpenVINO's thread pool exists (no competition for the cores).
    inputs = {batch: chunks(test, batch, limit=8) for batch in args.batch_sizes}
    eager_rate, reference = {}, {}
    for batch, batches in inputs.items():
        seconds = common.time_per_call(
            lambda images=batches[0]: eager_scores(module, images), CPU, 1, args.min_repeats, args.min_seconds
        )
        eager_rate[batch] = batch / seconds
        reference[batch] = np.concatenate([eager_scores(module, images) for images in batches])

    start = time.perf_counter()
    xml = export_openvino(module, workdir / name, image_size)
    export_seconds = time.perf_counter() - start
    scorer = OpenVinoScorer(xml, workdir)
    for batch, batches in inputs.items():
        predict = scorer.predictor(batch)
        seconds = common.time_per_call(
            lambda images=batches[0], predict=predict: predict(images), CPU, 1, args.min_repeats, args.min_seconds
        )
        exported = np.concatenate([predict(images) for images in batches])
        difference = float(np.abs(reference[batch] - exported).max())
        spread = float(reference[batch].max() - reference[batch].min())
        relative = difference / spread if spread > 0 else math.nan
        report.rows.append(Row(report.name, "torch eager", batch, eager_rate[batch]))
        report.rows.append(Row(report.name, "OpenVINO", batch, batch / seconds, difference, relative))
    layout = "dynamic (anomalib inferencer)" if scorer.dynamic_batch else "static (reshaped per batch size)"
    report.settings = (
        f"{report.name}: {description}, image {image_size}x{image_size}, {bank}; OpenVINO IR batch {layout}, "
        f"{scorer.threads} OpenVINO threads, export {export_seconds:.0f} s; scores compared on {len(test)} test images"
    )
    return report


def render(reports: list[ModelReport]) -> str:
    """Result table, settings lines and errors."""
    headers = ["model", "backend", "batch", "images/s", "speed-up", "max |score diff|", "diff / score range"]
    rows: list[list[object]] = []
    for report in reports:
        eager = {row.batch: row.images_per_second for row in report.rows if row.backend == "torch eager"}
        for row in report.rows:
            openvino = row.backend == "OpenVINO"
            rows.append(
                [
                    row.model,
                    row.backend,
                    row.batch,
                    f"{row.images_per_second:.1f}",
                    f"{row.images_per_second / eager[row.batch]:.2f}x" if openvino else "1.00x",
                    f"{row.max_difference:.2e}" if row.max_difference is not None else "-",
                    f"{row.relative_difference:.1e}" if row.relative_difference is not None else "-",
                ]
            )
    lines = [common.format_table(headers, rows)] if rows else []
    lines += [report.settings for report in reports if report.settings]
    lines += [f"{report.name} failed: {report.error}" for report in reports if report.error]
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--data", choices=common.DATA_CHOICES, default="fashion_mnist")
    parser.add_argument("--category", default="0", help="normal class (name or index)")
    parser.add_argument("--bank-images", type=int, default=256, help="normal images the scorer is fitted on")
    parser.add_argument("--test-images", type=int, default=32, help="test images scored (half normal, half not)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--firm-image-size", type=int, default=32)
    parser.add_argument("--firm-score", choices=("cos_k", "angled", "ensemble"), default="angled")
    parser.add_argument("--msc-image-size", type=int, default=224)
    parser.add_argument("--mcl-image-size", type=int, default=32)
    parser.add_argument("--min-repeats", type=int, default=3, help="timed calls per measurement, at least")
    parser.add_argument("--min-seconds", type=float, default=2.0, help="timed seconds per measurement, at least")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def main() -> None:
    """Benchmark every model and print the table."""
    common.quiet_warnings()
    args = parse_args()
    print(common.hardware_description(CPU))
    print(
        f"CPU inference; data {args.data} class {args.category}; scorer fitted on {args.bank_images} normal images; "
        f"seed {args.seed}",
        flush=True,
    )
    reports: list[ModelReport] = []
    with tempfile.TemporaryDirectory(prefix="anomalib_firm_bench_") as workdir:
        for name in args.models:
            try:
                report = benchmark_model(name, args, Path(workdir))
            except Exception as error:  # a failing model is reported, the others still run
                report = ModelReport(name.upper(), error=f"{type(error).__name__}: {error}")
            reports.append(report)
            for row in report.rows:
                print(
                    f"  {row.model} {row.backend} batch {row.batch}: {row.images_per_second:.1f} images/s", flush=True
                )
            if report.error:
                print(f"  {report.name} failed: {report.error}", flush=True)
    print()
    print(render(reports))


if __name__ == "__main__":
    main()
