"""Accuracy on the 10 Fashion-MNIST one-vs-rest tasks: FIRM, MSC, MCL beside what needs no training of ours.

Runs ``anomalib benchmark --config configs/benchmark/fashion_mnist_<protocol>_<model>.yaml``
for each model (the stock command, our models registered by the package), reads anomalib's
``results.csv`` and prints one table of per-class and mean image AUROC. Beside them, on exactly
the same training and test images (same data module arguments, seeded subsets and validation
split): a raw-pixel 5-NN; anomalib's PatchCore, PaDiM and DFM on the offline ImageNet
EfficientNet-Lite0 weights MSC starts from; and each model's own scorer on its starting network
(before training: the config's start, its pretrained weights or a seeded random network). See
``_accuracy_references.py``; ``--no-references`` leaves out all but the raw-pixel row.

Protocols: ``quick`` fits a 2-core CPU in minutes (subsets, small images, a few epochs: see each
config's header); ``medium`` takes about an hour per model on 2 cores (the whole normal class
and the whole test split, small images, about one epoch); ``full`` is the papers' schedules,
for a GPU. The reported numbers are from the last epoch; no checkpoint or setting is picked on
the test images.

Usage:
    python tools/benchmark_accuracy.py --protocol quick [--models firm msc mcl] [--classes 0 1 ...]
    python tools/benchmark_accuracy.py --protocol quick --baseline-only  # the reference rows only
Needs Fashion-MNIST (Debian: ``apt-get install dataset-fashion-mnist``, or ``--data.root``).
Exits non-zero when any benchmark job failed (``anomalib benchmark`` itself exits 0 then).
"""

from __future__ import annotations

import argparse
import csv
import functools
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _accuracy_references as references
import _bench_common as common
import numpy as np
import torch
import yaml

from anomalib_firm.registry import model_names

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs" / "benchmark"
MODELS = model_names()


def load_config(protocol: str, model: str, classes: list[int]) -> dict:
    """The benchmark config of a model, restricted to ``classes``."""
    config = yaml.safe_load((CONFIGS / f"fashion_mnist_{protocol}_{model}.yaml").read_text())
    config["benchmark"]["data"]["init_args"]["category"] = {"grid": classes}
    return config


class BenchmarkFailedError(RuntimeError):
    """``anomalib benchmark`` failed or some of its jobs did (it exits 0 either way)."""


#: What ``anomalib benchmark`` prints when a job raised (it logs the traceback to runs/pipeline.log and exits 0).
JOB_FAILURE_MARKER = "There were some errors"


def run_benchmark(config: dict, workdir: Path) -> list[dict[str, str]]:
    """Run ``anomalib benchmark`` on ``config`` in ``workdir``; return the rows of results.csv.

    Raises:
        BenchmarkFailedError: when the command or any of its jobs failed (see :func:`benchmark_rows`).
    """
    config_path = workdir / "benchmark.yaml"
    config_path.write_text(yaml.safe_dump(config))
    anomalib = str(Path(sys.executable).with_name("anomalib"))
    log = workdir / "anomalib.log"
    with log.open("w") as stream:
        completed = subprocess.run(
            [anomalib, "benchmark", "--config", str(config_path)], cwd=workdir, stdout=stream, stderr=stream
        )
    categories = config["benchmark"]["data"]["init_args"]["category"]
    expected = categories["grid"] if isinstance(categories, dict) else [categories]
    return benchmark_rows(workdir, completed.returncode, expected)


def benchmark_rows(workdir: Path, returncode: int, expected_categories: list) -> list[dict[str, str]]:
    """The rows of the results.csv an ``anomalib benchmark`` run left in ``workdir``, if every job succeeded.

    anomalib's benchmark catches a failing job, logs it to ``runs/pipeline.log``, saves the other
    jobs' results and exits 0, so a failure shows only in its output (``anomalib.log`` here) and as
    categories missing from results.csv. Any of these, or a non-zero exit, raises.

    Raises:
        BenchmarkFailedError: naming the log files, the missing categories and the end of anomalib's error log.
    """
    log = workdir / "anomalib.log"
    pipeline_log = workdir / "runs" / "pipeline.log"
    results = sorted(workdir.glob("runs/benchmark/*/results.csv"))
    rows: list[dict[str, str]] = []
    if results:
        with results[-1].open() as stream:
            rows = list(csv.DictReader(stream))
    found = {row.get("data.init_args.category") for row in rows}
    missing = [category for category in expected_categories if str(category) not in found]
    output = log.read_text() if log.exists() else ""
    problems = []
    if returncode != 0:
        problems.append(f"exit status {returncode}")
    if JOB_FAILURE_MARKER in output:
        problems.append("it reported failed jobs")
    if not results:
        problems.append("it wrote no results.csv")
    elif missing:
        problems.append(f"no result for categories {missing}")
    if problems:
        errors = pipeline_log.read_text() if pipeline_log.exists() else output
        msg = (
            f"anomalib benchmark in {workdir} failed ({'; '.join(problems)}). Its output: {log}; its error log: "
            f"{pipeline_log}. End of the error log:\n{errors[-3000:]}"
        )
        raise BenchmarkFailedError(msg)
    return rows


def raw_pixel_knn_auroc(data_args: dict, category: int, k: int = 5) -> float:
    """AUROC of the mean L2 distance to the k nearest normal training images, on raw pixels."""
    from sklearn.metrics import roc_auc_score

    from anomalib_firm.callbacks import raw_pixel_knn_scores
    from anomalib_firm.data import FashionMNIST

    datamodule = FashionMNIST(**{**data_args, "category": category})
    datamodule.setup()

    def pixels(dataset: torch.utils.data.Dataset) -> tuple[torch.Tensor, torch.Tensor]:
        batch = dataset.__getitems__(list(range(len(dataset))))
        return batch.image[:, :1], batch.gt_label.long()

    train, _ = pixels(datamodule.train_data)
    test, labels = pixels(datamodule.test_data)
    return float(roc_auc_score(labels.numpy(), raw_pixel_knn_scores(train, test, k).numpy()))


def print_table(
    protocol: str,
    classes: list[int],
    data_args: dict,
    table: dict[str, dict[int, float]],
    settings: dict[str, str],
    durations: dict[str, float],
) -> None:
    """Print the protocol, hardware and per-class AUROC table (markdown)."""
    print(f"\nFashion-MNIST one-vs-rest, protocol `{protocol}` (image AUROC, last epoch)")
    print(f"hardware: {common.hardware_description()}")
    subsets = ", ".join(f"{key}={value}" for key, value in data_args.items())
    print(f"data: {subsets or 'the whole training split of the normal class and the whole test split'}")
    for name, text in settings.items():
        print(f"{name}: {text}; wall time {durations[name] / 60:.1f} min for {len(classes)} classes")
    for name in (name for name in durations if name not in settings):
        print(f"{name}: wall time {durations[name] / 60:.1f} min for {len(classes)} classes")
    header = "| method | " + " | ".join(str(c) for c in classes) + " | mean |"
    print("\n" + header)
    print("|" + "---|" * (len(classes) + 2))
    for name, scores in table.items():
        values = [scores.get(c, float("nan")) for c in classes]
        cells = " | ".join(f"{v:.3f}" for v in values)
        print(f"| {name} | {cells} | {np.nanmean(values):.3f} |", flush=True)


def seeded_model(model_class: type, init_args: dict, seed: int) -> Any:
    """The network a benchmark run starts from: the model built after seeding as the run does."""
    from lightning.pytorch import seed_everything

    seed_everything(seed, verbose=False)
    return model_class(**init_args)


def reference_rows(
    args: argparse.Namespace,
    data_args: dict,
    seed: int,
    table: dict[str, dict[int, float]],
    durations: dict[str, float],
) -> None:
    """Add to ``table`` anomalib's models on the Lite0 weights and each of ``args.models`` before training.

    ``seed``: the protocol's, set before each of anomalib's models is built.
    """
    from anomalib_firm import models
    from anomalib_firm.data import FashionMNIST
    from anomalib_firm.registry import MODELS as MODEL_PACKAGES

    whole_class = data_args.get("max_train_images") is None
    builders = {name: (build, data_args) for name, build in references.peer_models(whole_class, args.peers).items()}
    classes = {name.lower(): getattr(models, name) for name in MODEL_PACKAGES}
    for model in args.models:
        config = load_config(args.protocol, model, args.classes)["benchmark"]
        init_args = {**config["model"]["init_args"], "visualizer": False, "evaluator": False}
        untrained = functools.partial(seeded_model, classes[model], init_args, config["seed"])
        model_data = {k: v for k, v in config["data"]["init_args"].items() if k != "category"}
        builders[f"{classes[model].__name__} before training (its scorer, starting network)"] = (untrained, model_data)
    progress = common.Progress(len(builders) * len(args.classes))
    with tempfile.TemporaryDirectory() as workdir:
        for name, (build, arguments) in builders.items():
            table[name] = {}
            start = time.perf_counter()
            for category in args.classes:
                datamodule = FashionMNIST(**{**arguments, "category": category})
                datamodule.setup()
                if "anomalib;" in name:
                    table[name][category] = references.peer_auroc(build, datamodule, workdir, seed)
                else:
                    table[name][category] = references.starting_auroc(build(), datamodule)
                progress.step(f"{name.split(' (')[0]}, class {category}: AUROC {table[name][category]:.3f}")
            durations[name] = time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocol", choices=("quick", "medium", "full"), default="quick")
    parser.add_argument(
        "--models", nargs="*", choices=MODELS, default=list(MODELS), help="our models to run (no names: none)"
    )
    parser.add_argument("--classes", nargs="+", type=int, default=list(range(10)))
    parser.add_argument("--baseline-only", action="store_true", help="only the rows that train none of our models")
    parser.add_argument(
        "--no-references", action="store_true", help="no anomalib models, no before-training rows (raw pixels only)"
    )
    parser.add_argument(
        "--peers",
        nargs="*",
        choices=references.PEERS,
        default=list(references.PEERS),
        help="anomalib's models to run as reference rows (PatchCore's coreset over the whole class of the "
        "medium protocol: 8 to 28 min a class, measured on one AVX2 core)",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="keep anomalib's outputs here (default: temp)")
    args = parser.parse_args()

    # The images every model sees and the protocol's seed (the batch sizes differ per model and do not matter here).
    reference_config = load_config(args.protocol, "firm", args.classes)["benchmark"]
    data_args = {
        key: value
        for key, value in reference_config["data"]["init_args"].items()
        if key not in ("category", "train_batch_size", "eval_batch_size")
    }
    table: dict[str, dict[int, float]] = {"raw-pixel 5-NN": {}}
    for category in args.classes:
        table["raw-pixel 5-NN"][category] = raw_pixel_knn_auroc(data_args, category)
    settings: dict[str, str] = {}
    durations: dict[str, float] = {}
    if not args.no_references:
        reference_rows(args, data_args, reference_config["seed"], table, durations)
        print_table(args.protocol, args.classes, data_args, table, settings, durations)
    failures: list[str] = []
    models = [] if args.baseline_only else args.models
    progress = common.Progress(len(models))
    for model in models:
        config = load_config(args.protocol, model, args.classes)
        workdir = (args.workdir / model).resolve() if args.workdir else Path(tempfile.mkdtemp(prefix=f"bench_{model}_"))
        workdir.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        print(f"{model}: anomalib benchmark of {len(args.classes)} class(es) running; log {workdir / 'anomalib.log'}",
              file=sys.stderr, flush=True)  # fmt: skip
        try:
            rows = run_benchmark(config, workdir)
        except BenchmarkFailedError as error:  # the other models still run; the exit status says it failed
            print(f"\n{model}: {error}", file=sys.stderr, flush=True)
            failures.append(model)
            continue
        name = rows[0]["model.class_path"]
        durations[name] = time.perf_counter() - start
        table[name] = {int(row["data.init_args.category"]): float(row["image_AUROC"]) for row in rows}
        progress.step(f"{model}: mean AUROC {np.mean(list(table[name].values())):.3f}; results in {workdir}")
        init_args = config["benchmark"]["model"]["init_args"]
        settings[name] = f"seed={config['benchmark']['seed']}, " + ", ".join(
            f"{key}={value}" for key, value in init_args.items() if key != "visualizer"
        )
        print_table(args.protocol, args.classes, data_args, table, settings, durations)  # partial results early
    if not models and args.no_references:  # otherwise printed already
        print_table(args.protocol, args.classes, data_args, table, settings, durations)
    if failures:
        sys.exit(f"benchmark_accuracy: anomalib benchmark failed for {', '.join(failures)} (details above)")


if __name__ == "__main__":
    main()
