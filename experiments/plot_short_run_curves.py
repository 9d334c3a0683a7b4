r"""Plot the validation curves that ``experiments/short_run_curves.py`` printed (one-off experiment script).

Each log holds lines ``<task> seed <s> <bn>: <auroc at epoch 0> <auroc> ... (raw <auroc>)``; one panel
per task, one line per log (its label), the raw-pixel 5-NN dashed. A run stopped part-way has no such
line: its curve is read from the per-point lines (``<task> seed <s> epoch <e>: model <auroc> (...)``, the
model's own scorer) and the raw-pixel AUROC from ``<task> seed <s> raw-pixel 5-NN: <auroc>`` or ``--raw``.
Usage:

    python experiments/plot_short_run_curves.py --every 2 --out docs/experiments/msc.png \
        "lr 1e-4:/tmp/exp/msc_lr1e-4_m09.log" "lr 1e-3:/tmp/exp/msc_lr1e-3_m09.log"
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

LINE = re.compile(r"^(?P<task>\S+) seed (?P<seed>\d+) \S+: (?P<points>[0-9. ]+) \(raw (?P<raw>[0-9.]+)\)")


POINT = re.compile(r"^\s+(?P<task>\S+) seed (?P<seed>\d+) epoch \d+: .*\bmodel (?P<auroc>[0-9.]+)")
RAW = re.compile(r"^\s+(?P<task>\S+) seed (?P<seed>\d+) raw-pixel 5-NN: (?P<raw>[0-9.]+)")


def read_curves(path: Path, raw_given: dict[str, float]) -> dict[str, tuple[list[float], float]]:
    """``task -> (curve, raw-pixel AUROC)`` of a log (the first seed of each task).

    Tasks without a summary line (a run stopped part-way) take the model scorer's per-point values and the
    raw-pixel AUROC the log printed, else ``raw_given[task]``.
    """
    curves: dict[str, tuple[list[float], float]] = {}
    points: dict[str, list[float]] = {}
    raws = dict(raw_given)
    first_seed: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if summary := LINE.match(line):
            curves.setdefault(
                summary["task"], ([float(value) for value in summary["points"].split()], float(summary["raw"]))
            )
            continue
        match = POINT.match(line) or RAW.match(line)
        if match is None or first_seed.setdefault(match["task"], match["seed"]) != match["seed"]:
            continue
        if match.re is RAW:
            raws[match["task"]] = float(match["raw"])
        else:
            points.setdefault(match["task"], []).append(float(match["auroc"]))
    for task, curve in points.items():
        if task not in curves:
            if task not in raws:
                msg = f"{path}: no raw-pixel AUROC for {task}: pass --raw {task}=<auroc>"
                raise SystemExit(msg)
            curves[task] = (curve, raws[task])
    return curves


def main() -> None:
    """Parse ``label:log`` arguments and write the plot."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="label:path of a short_run_curves log")
    parser.add_argument("--every", type=int, default=1, help="epochs between the points of the logs")
    parser.add_argument("--title", default="validation image AUROC")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--raw", nargs="*", default=[], help="task=auroc: the raw-pixel AUROC of a stopped run whose log lacks it"
    )
    args = parser.parse_args()
    raw_given = {task: float(value) for task, _, value in (item.partition("=") for item in args.raw)}

    import matplotlib as mpl

    mpl.use("Agg")
    from matplotlib import pyplot as plt

    runs = {label: read_curves(Path(path), raw_given) for label, _, path in (run.partition(":") for run in args.runs)}
    tasks = sorted({task for curves in runs.values() for task in curves})
    figure, axes = plt.subplots(1, len(tasks), figsize=(4 * len(tasks), 3.4), squeeze=False)
    for axis, task in zip(axes[0], tasks, strict=True):
        raw = None
        for color, (label, curves) in enumerate(runs.items()):  # one colour per run in every panel
            if task in curves:
                curve, raw = curves[task]
                epochs = [index * args.every for index in range(len(curve))]
                axis.plot(epochs, curve, marker="o", color=f"C{color}", label=label)
        if raw is not None:
            axis.axhline(raw, linestyle="--", color="grey", label="raw-pixel 5-NN")
        axis.set_title(task)
        axis.set_xlabel("epoch")
        axis.set_ylabel(args.title)
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
