"""Deployment table of FIRM, MSC and MCL on the CPU: IR size, speed, score fidelity and AUROC per export.

Protocol. For every model: build the package's Lightning model at the quick Fashion-MNIST
protocol's settings (FIRM ResNet-18 at 16 px, angled score; MSC EfficientNet-Lite0 with the
package's ImageNet weights at 64 px; MCL ResNet-18 at 16 px, SEI), post-processor off so every
backend returns the raw score. The networks are *not trained* here (``--train-note``: speed and
the fidelity of a compressed export do not need trained weights; FIRM and MCL recalibrate their
BatchNorm statistics on the normal images, MSC uses ImageNet features). The scorer is fitted on
all normal training images of ``--category`` (6,000 for a Fashion-MNIST class: FIRM's bank is
4 rotations x 6,000 x 512 floats); FIRM and MSC also with a compact bank (``--compact-size``
features per view by k-center-greedy coreset, stored in float16).

Rows per model and bank: eager PyTorch fp32 (the reference), then the OpenVINO IR in fp32, FP16
and INT8_PTQ, each compiled with the ``f32`` precision hint and with OpenVINO's default precision
(bf16 on CPUs with AVX-512 BF16 or AMX, f32 elsewhere). The IRs are made as ``anomalib export
--export_type openvino --compression_type ...`` makes them (the model's ``to_onnx`` once per bank,
``openvino.convert_model``, the model's NNCF step with the scorer kept in floating point, calibrated
on 300 normal training images, ``openvino.save_model``); the tests check that path through the
stock command. Columns: IR size on disk (xml + bin), images/s at batch 1 and batch 32 (PyTorch with
its threads, OpenVINO's ``OpenVINOInferencer`` on all cores; one warm-up call, then the median of at
least ``--min-repeats`` calls and ``--min-seconds``), the largest absolute score difference from
eager PyTorch over the test images (and relative to the eager scores' range), and the image AUROC
on the quick protocol's test images (``FashionMNIST(category, max_test_images=2000)``, 20 %
carved out for validation: the same 1,600 reported images for every row). Nothing is written
to the repository (exports go to a temporary folder).

Several classes (``--category 0 1 ... 9``): one table per class, the speeds measured on the first
class only (they do not depend on the class; the other tables leave them blank), then a table of
the AUROC of every row per class with its mean and its difference from the eager fp32 mean.

Usage (from the repository root)::

    python tools/benchmark_inference.py                      # all three models, class 0
    python tools/benchmark_inference.py --models firm --min-seconds 1
    python tools/benchmark_inference.py --models firm mcl --category 0 1 2 3 4 5 6 7 8 9   # mean AUROC
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_common as common

from anomalib_firm.registry import model_names

MODELS = model_names()
CPU = torch.device("cpu")
F32 = {"INFERENCE_PRECISION_HINT": "f32"}


@dataclass
class Row:
    """One line of the table."""

    model: str
    bank: str
    export: str
    precision: str
    size_mb: float | None
    batch1: float | None
    batch32: float | None
    max_difference: float | None
    relative_difference: float | None
    auroc: float


def build_module(name: str, args: argparse.Namespace, compact: bool) -> tuple[nn.Module, int]:
    """The Lightning model at the quick protocol's settings (post-processor off) and its image size."""
    from anomalib_firm.models import Firm, Mcl, Msc

    off: dict[str, Any] = {"post_processor": False, "evaluator": False, "visualizer": False}
    bank: dict[str, Any] = {"bank_size": args.compact_size, "bank_precision": "float16"} if compact else {}
    if name == "firm":
        return Firm(backbone="resnet18_cifar", image_size=16, bn_recalibration=True, **bank, **off), 16
    if name == "msc":
        return Msc(
            backbone="efficientnet_lite0", weights="efficientnet-lite0-package", image_size=64, **bank, **off
        ), 64
    return Mcl(backbone="resnet18_cifar", image_size=16, bn_recalibration=True, **off), 16


def load_data(category: str) -> tuple[Any, Any]:
    """The data module with every normal training image, and the quick protocol's test images and labels."""
    from anomalib_firm.data import FashionMNIST

    try:
        full = FashionMNIST(category=category, num_workers=0)
        full.setup()
        quick = FashionMNIST(category=category, max_train_images=300, max_test_images=2000, num_workers=0)
        quick.setup()
    except (FileNotFoundError, OSError, RuntimeError) as error:
        msg = f"Fashion-MNIST not found ({error}): `apt-get install -y dataset-fashion-mnist`."
        raise SystemExit(msg) from error
    test = quick.test_data.__getitems__(list(range(len(quick.test_data))))
    return full, (torch.Tensor.as_subclass(test.image, torch.Tensor).float(), test.gt_label.long().numpy())


def resized(images: torch.Tensor, size: int) -> torch.Tensor:
    """Images in [0, 1] resized as the pre-processor and the exported models do."""
    from anomalib_firm.models.components.export.resizing import resize_like_the_model

    return resize_like_the_model(images, (size, size)).contiguous()


def in_batches(score: Callable[[torch.Tensor], np.ndarray], images: torch.Tensor, batch: int = 32) -> np.ndarray:
    """Scores of all images, ``batch`` at a time."""
    return np.concatenate([score(images[start : start + batch]) for start in range(0, len(images), batch)])


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Image AUROC (higher score = more anomalous)."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def speeds(score: Callable[[torch.Tensor], np.ndarray], images: torch.Tensor, args: argparse.Namespace) -> list[float]:
    """Images/s at batch 1 and 32."""
    rates = []
    for batch in (1, 32):
        sample = images[:batch]
        seconds = common.time_per_call(lambda sample=sample: score(sample), CPU, 1, args.min_repeats, args.min_seconds)
        rates.append(batch / seconds)
    return rates


def make_irs(module: nn.Module, datamodule: Any, image_size: int, root: Path, exports: list[str]) -> dict[str, Path]:
    """fp32 / FP16 / INT8_PTQ IRs of ``module`` made as ``anomalib export`` makes them, from one ONNX export."""
    import openvino as ov
    from anomalib.deploy.export import CompressionType

    output = io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        onnx = module.to_onnx(root / "onnx", input_size=(image_size, image_size))
    paths = {}
    for export in exports:
        model = ov.convert_model(onnx)
        if export == "int8_ptq":
            with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
                model = module._compress_ov_model(model, CompressionType.INT8_PTQ, datamodule)
        path = root / export / "model.xml"
        path.parent.mkdir(parents=True)
        ov.save_model(model, path, compress_to_fp16=export == "fp16")
        paths[export] = path
    return paths


def ir_megabytes(xml: Path) -> float:
    """Size of the IR on disk (xml + bin) in MB."""
    return (xml.stat().st_size + xml.with_suffix(".bin").stat().st_size) / 1e6


def benchmark_model(
    name: str, compact: bool, args: argparse.Namespace, data: tuple[Any, Any], workdir: Path, timed: bool = True
) -> tuple[list[Row], str]:
    """All rows of one model and bank (images/s only when ``timed``), and a settings line."""
    from anomalib.deploy import OpenVINOInferencer

    full, (test_images, labels) = data
    common.seed_all(args.seed)
    module, image_size = build_module(name, args, compact)
    module = module.to(CPU).eval()
    module.fit_scorer_from_loader(full.train_dataloader())
    images = resized(test_images, image_size)
    bank = "-"
    if name != "mcl":
        features = module.model.bank.features
        bank = f"{'coreset ' if compact else ''}{features.shape[1]:,}x{features.shape[0]} {str(features.dtype)[6:]}"

    def eager(batch: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return module(batch).pred_score.reshape(-1).numpy()

    def rates(score: Callable[[torch.Tensor], np.ndarray]) -> list[float | None]:
        return list(speeds(score, images, args)) if timed else [None, None]

    reference = in_batches(eager, images)
    spread = float(reference.max() - reference.min())
    label = name.upper()
    rows = [Row(label, bank, "torch eager", "fp32", None, *rates(eager), None, None, auroc(labels, reference))]
    root = workdir / f"{name}_{'compact' if compact else 'full'}"
    exports = ["fp32", "int8_ptq"] if compact else ["fp32", "fp16", "int8_ptq"]
    for export, xml in make_irs(module, full, image_size, root, exports).items():
        for precision, config in (("f32 hint", F32), ("default", {})):
            with common_workdir(root):
                inferencer = OpenVINOInferencer(xml, device="CPU", config=config)

            def exported(batch: torch.Tensor, inferencer: Any = inferencer) -> np.ndarray:
                return np.asarray(inferencer.predict(batch).pred_score).reshape(-1)

            scores = in_batches(exported, images)
            difference = float(np.abs(scores - reference).max())
            rows.append(
                Row(
                    label,
                    bank,
                    export,
                    precision,
                    ir_megabytes(xml),
                    *rates(exported),
                    difference,
                    difference / spread if spread > 0 else None,
                    auroc(labels, scores),
                )
            )
            speed = f"{rows[-1].batch32:.0f} images/s at 32, " if timed else ""
            print(f"  {label} {bank} {export} {precision}: {speed}AUROC {rows[-1].auroc:.4f}", flush=True)
    settings = f"{label}: image {image_size} px, bank {bank}, torch threads {torch.get_num_threads()}"
    return rows, settings


@contextlib.contextmanager
def common_workdir(path: Path) -> Any:
    """Run the block in ``path`` (the inferencer writes ./openvino_cache)."""
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def cell(value: float | None, spec: str) -> str:
    """A table cell: ``value`` formatted by ``spec``, empty where it was not measured."""
    return "" if value is None else format(value, spec)


def render(rows: list[Row]) -> str:
    """The table (markdown)."""
    lines = [
        "| model | bank (per view) | export | precision | IR MB | img/s b1 | img/s b32 | max abs score diff | rel. "
        "| AUROC |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        measured = [
            cell(row.size_mb, ".1f"),
            cell(row.batch1, ",.0f"),
            cell(row.batch32, ",.0f"),
            cell(row.max_difference, ".1e"),
            cell(row.relative_difference, ".0e"),
        ]
        lines.append(
            f"| {row.model} | {row.bank} | {row.export} | {row.precision} | {' | '.join(measured)} | {row.auroc:.4f} |"
        )
    return "\n".join(lines)


def render_auroc_means(categories: list[str], tables: list[list[Row]]) -> str:
    """AUROC of every row (model, bank, export, precision) per class, its mean and its change from eager fp32."""
    lines = [
        "| model | bank (per view) | export | precision | " + " | ".join(categories) + " | mean | vs eager fp32 |",
        "|---|---|---|---|" + "---|" * (len(categories) + 2),
    ]
    eager_means: dict[tuple[str, str], float] = {}
    for index, row in enumerate(tables[0]):
        values = [table[index].auroc for table in tables]
        mean = float(np.mean(values))
        if row.export == "torch eager":
            eager_means[row.model, row.bank] = mean
        change = mean - eager_means[row.model, row.bank]
        lines.append(
            f"| {row.model} | {row.bank} | {row.export} | {row.precision} | "
            + " | ".join(f"{value:.4f}" for value in values)
            + f" | {mean:.4f} | {change:+.4f} |"
        )
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument(
        "--category",
        "--categories",
        dest="categories",
        nargs="+",
        default=["0"],
        help="normal Fashion-MNIST class(es) (names or indices); speeds on the first only",
    )
    parser.add_argument("--banks", nargs="+", choices=("full", "compact"), default=["full", "compact"])
    parser.add_argument("--compact-size", type=int, default=1000, help="features per view of the compact banks")
    parser.add_argument("--min-repeats", type=int, default=3, help="timed calls per measurement, at least")
    parser.add_argument("--min-seconds", type=float, default=2.0, help="timed seconds per measurement, at least")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def main() -> None:
    """Benchmark every model on every class and print the tables."""
    common.quiet_warnings()
    args = parse_args()
    print(common.hardware_description(CPU))
    print(f"load average at start: {common.load_average()}", flush=True)
    tables: list[list[Row]] = []
    jobs = [(name, bank == "compact") for name in args.models for bank in (args.banks if name != "mcl" else ["full"])]
    progress = common.Progress(len(args.categories) * len(jobs))
    for number, category in enumerate(args.categories):
        data = load_data(category)
        rows: list[Row] = []
        settings: list[str] = []
        with tempfile.TemporaryDirectory(prefix="anomalib_firm_bench_") as workdir:
            for name, compact in jobs:
                model_rows, line = benchmark_model(name, compact, args, data, Path(workdir), timed=number == 0)
                rows += model_rows
                settings.append(line)
                progress.step(f"class {category}, {name}{' (compact bank)' if compact else ''}: {len(model_rows)} rows")
        tables.append(rows)
        print()
        print(
            f"Fashion-MNIST class {category}: scorer fitted on {len(data[0].train_data):,} normal training images; "
            f"AUROC and score differences on the quick protocol's {len(data[1][1]):,} test images; untrained "
            f"networks; seed {args.seed}; load average now: {common.load_average()}"
            + ("" if number == 0 else "; images/s measured on the first class only")
        )
        print(render(rows))
        print("\n".join(settings), flush=True)
    if len(tables) > 1:
        print(f"\nImage AUROC per class (quick protocol's test images) and mean over {len(tables)} classes:")
        print(render_auroc_means(args.categories, tables))


if __name__ == "__main__":
    main()
