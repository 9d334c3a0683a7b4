"""The FIRM paper's loss comparison in miniature: FIRM vs NT-Xent vs Rot-SupCon, learning curves.

Same network, views, schedule and scoring for every loss (``Firm(loss=...)``); only the positive
pairs differ. For every (class, loss, seed) the run trains from scratch and the
:class:`~anomalib_firm.callbacks.LearningCurve` callback records the *validation* AUROC at epoch 0
and every ``--every`` epochs (the test split is never read). Prints, per loss: final validation
AUROC, AULC, and the epochs each loss needs to reach NT-Xent's final AUROC (per class and seed;
"-" when never reached). Writes ``curves.csv`` and ``curves.png`` (mean curve per loss, with the
raw-pixel 5-NN line) into ``--out``.

Example (2-core CPU, Fashion-MNIST from the Debian package ``dataset-fashion-mnist``):

    python experiments/firm_loss_comparison.py --data fashion_mnist --classes 0 1 2 3 --seeds 0 1 2 --epochs 8
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))  # the benchmarks' shared helpers
import _bench_common as common
import numpy as np

LOSSES = ("firm", "ntxent", "supcon")


def datamodule(data: str, category: int, batch_size: int, max_train_images: int, max_test_images: int) -> object:
    """The one-vs-rest data module of one class: a seeded training subset, a seeded test subset with validation."""
    if data == "digits":
        from anomalib_firm.data import Digits

        return Digits(category=str(category), train_batch_size=batch_size, seed=0)
    from anomalib_firm.data import FashionMNIST

    return FashionMNIST(
        root="/usr/share/datasets/fashion-mnist"
        if Path("/usr/share/datasets/fashion-mnist").exists()
        else "./datasets",
        category=category,
        train_batch_size=batch_size,
        max_train_images=max_train_images,
        max_test_images=max_test_images,
        seed=0,
    )


def run_one(args: argparse.Namespace, category: int, loss: str, seed: int) -> list[dict]:
    """Train one model with the learning-curve callback; return its curve points as rows."""
    from anomalib.engine import Engine
    from lightning.pytorch import seed_everything

    from anomalib_firm.callbacks import LearningCurve
    from anomalib_firm.models import Firm

    seed_everything(seed, verbose=False)
    model = Firm(
        image_size=args.image_size,
        loss=loss,
        max_epochs=args.epochs,
        val_every_n_epochs=args.epochs,
        visualizer=False,
    )
    curve = LearningCurve(
        every_n_epochs=args.every, output_dir=args.out / "runs" / f"{category}_{loss}_{seed}", plot=False
    )
    engine = Engine(
        callbacks=[curve],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=args.out / "results",
    )
    data = datamodule(args.data, category, args.batch_size, args.max_train_images, args.max_test_images)
    engine.fit(model=model, datamodule=data)
    return [
        {"class": category, "loss": loss, "seed": seed, "epoch": p.epoch, "step": p.step, "val_auroc": p.auroc,
         "raw_pixel_val_auroc": p.raw_pixel_auroc}
        for p in curve.points
    ]  # fmt: skip


def read_rows(path: Path) -> list[dict]:
    """Curve points from a ``curves.csv`` this tool wrote, with numbers parsed."""
    return [
        {**row, **{key: int(row[key]) for key in ("class", "seed", "epoch", "step")},
         **{key: float(row[key]) for key in ("val_auroc", "raw_pixel_val_auroc")}}
        for row in csv.DictReader(path.open())
    ]  # fmt: skip


def epochs_to_reach(rows: list[dict], target: float) -> int | None:
    """First evaluated epoch whose validation AUROC reaches ``target`` (``None`` if never)."""
    for row in sorted(rows, key=lambda row: row["epoch"]):
        if row["val_auroc"] >= target:
            return int(row["epoch"])
    return None


def summarise(rows: list[dict], losses: list[str]) -> str:
    """Per-loss table: mean final AUROC, mean AULC, epochs to NT-Xent's final AUROC."""
    from anomalib_firm.callbacks import area_under_learning_curve

    def runs(loss: str) -> dict[tuple[int, int], list[dict]]:
        grouped: dict[tuple[int, int], list[dict]] = {}
        for row in rows:
            if row["loss"] == loss:
                grouped.setdefault((row["class"], row["seed"]), []).append(row)
        return grouped

    reference = runs("ntxent")
    table = []
    for loss in losses:
        finals, aulcs, reached = [], [], []
        for key, points in runs(loss).items():
            points = sorted(points, key=lambda row: row["epoch"])
            finals.append(points[-1]["val_auroc"])
            aulcs.append(area_under_learning_curve([p["epoch"] for p in points], [p["val_auroc"] for p in points]))
            if key in reference:
                target = max(reference[key], key=lambda row: row["epoch"])["val_auroc"]
                reached.append(epochs_to_reach(points, target))
        hit = [value for value in reached if value is not None]
        reach_text = f"{np.mean(hit):.1f}" if hit else "-"
        reach_text = f"{reach_text} ({len(hit)}/{len(reached)} runs)" if reached else "-"
        table.append([loss, f"{np.mean(finals):.4f}", f"{np.mean(aulcs):.4f}", reach_text])
    return common.format_table(
        ["loss", "final val AUROC", "AULC", "epochs to NT-Xent's final (mean over runs that reach it)"], table
    )


def plot(rows: list[dict], losses: list[str], path: Path, title: str) -> None:
    """Mean validation curve per loss over classes and seeds, raw-pixel 5-NN as a dashed line."""
    import matplotlib as mpl

    mpl.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(6.5, 4))
    for loss in losses:
        epochs = sorted({row["epoch"] for row in rows if row["loss"] == loss})
        means = [np.mean([r["val_auroc"] for r in rows if r["loss"] == loss and r["epoch"] == e]) for e in epochs]
        axes.plot(epochs, means, marker="o", label=loss)
    raw = np.mean([row["raw_pixel_val_auroc"] for row in rows if row["epoch"] == 0])
    axes.axhline(raw, color="grey", linestyle="--", label="raw-pixel 5-NN")
    axes.set_xlabel("epoch (0 = untrained)")
    axes.set_ylabel("mean validation image AUROC")
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=common.DATA_CHOICES, default="fashion_mnist")
    parser.add_argument("--classes", nargs="+", type=int, default=[0, 1, 2, 3])
    parser.add_argument("--losses", nargs="+", choices=LOSSES, default=list(LOSSES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--every", type=int, default=2, help="evaluate every this many epochs")
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16, help="images per step (x4 rotated items)")
    parser.add_argument("--max-train-images", type=int, default=300)
    parser.add_argument("--max-test-images", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path("firm_loss_comparison"))
    parser.add_argument("--summarise-only", action="store_true", help="table and plot from <out>/curves.csv")
    parser.add_argument(
        "--resume", action="store_true", help="keep the runs in <out>/curves.csv; train only the missing ones"
    )
    args = parser.parse_args()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    common.quiet_warnings()
    if args.summarise_only:
        rows = read_rows(args.out / "curves.csv")
        losses = [loss for loss in args.losses if any(row["loss"] == loss for row in rows)]
        plot(rows, losses, args.out / "curves.png", f"FIRM vs baselines: {args.data}, {len(rows)} curve points")
        print(summarise(rows, losses))
        return

    rows = read_rows(args.out / "curves.csv") if args.resume and (args.out / "curves.csv").exists() else []
    done = {(row["class"], row["loss"], row["seed"]) for row in rows}
    start = time.perf_counter()
    for seed in args.seeds:  # seed-major: a run cut short still has whole seeds over all classes
        for category in args.classes:
            for loss in args.losses:
                if (category, loss, seed) in done:
                    continue
                rows += run_one(args, category, loss, seed)
                with (args.out / "curves.csv").open("w", newline="") as stream:
                    writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
                    writer.writeheader()
                    writer.writerows(rows)
    minutes = (time.perf_counter() - start) / 60
    subsets = (
        f"a {args.max_train_images}-image training subset; validation split of a {args.max_test_images}-image "
        "test subset"
        if args.data == "fashion_mnist"
        else "the whole normal class; validation split of the test split"
    )
    protocol = (
        f"{args.data} one-vs-rest, classes {args.classes}, seeds {args.seeds}, {args.epochs} epochs of "
        f"{args.batch_size} images (x4 rotations), {args.image_size} px, from {subsets}"
    )
    title = f"FIRM vs baselines: {args.data}, classes {args.classes}, {len(args.seeds)} seed(s)"
    plot(rows, args.losses, args.out / "curves.png", title)
    print(f"\n{protocol}\nhardware: {common.hardware_description()}\nwall time {minutes:.1f} min\n")
    print(summarise(rows, args.losses))
    print(f"\ncurves: {args.out / 'curves.csv'}, plot: {args.out / 'curves.png'}")


if __name__ == "__main__":
    main()
