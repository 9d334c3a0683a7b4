"""One real MCL run on one Fashion-MNIST class, sized for a 2-core CPU (about 10 minutes), with a result table.

Usage::

    OMP_NUM_THREADS=2 python experiments/mcl_fashion_mnist_run.py [--category 0] [--epochs 2] [--train-images 1000]
        [--test-images 2000] [--image-size 16] [--batch-size 32] [--backbone resnet18_cifar] [--seed 0]

Protocol (one-class, one-vs-rest): train MCL in one-class mode (labels = rotations) on a seeded
random subset of the normal class's 6,000 training images; validation (threshold and score
normalisation only, no model selection) and test are a seeded class-stratified subset of the
10,000 test images, split 20/80 by anomalib's ``from_test`` mode; the reported checkpoint is
the last one. Every other class is an anomaly. The paper's schedule (ResNet-34, 32 px, 1,024
items per batch, 400+ epochs) needs a GPU; the defaults here are a short stand-in.

Data: the idx files under ``--root`` or ``/usr/share/datasets/fashion-mnist`` (Debian package
``dataset-fashion-mnist``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))  # the benchmarks' shared helpers
import _bench_common as common
from anomalib.engine import Engine
from lightning.pytorch import seed_everything

from anomalib_firm.data import FashionMNIST
from anomalib_firm.models import Mcl
from anomalib_firm.models.image.mcl.lightning_model import LR_REFERENCE_BATCH


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="./datasets")
    parser.add_argument("--category", default="0", help="normal class: index 0-9 or name")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-images", type=int, default=1000, help="0: all 6,000 of the class")
    parser.add_argument("--test-images", type=int, default=2000, help="0: all 10,000 (20%% go to validation)")
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=32, help="images per step (items = 4 x images)")
    parser.add_argument("--backbone", default="resnet18_cifar")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="results/mcl_fashion_mnist")
    args = parser.parse_args()

    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    seed_everything(args.seed, workers=True)
    datamodule = FashionMNIST(
        root=args.root,
        category=args.category,
        train_batch_size=args.batch_size,
        eval_batch_size=256,
        max_train_images=args.train_images or None,
        max_test_images=args.test_images or None,
        seed=args.seed,
    )
    model = Mcl(backbone=args.backbone, image_size=args.image_size, visualizer=False)
    engine = Engine(
        max_epochs=args.epochs,
        accelerator="auto",
        devices=1,
        default_root_dir=args.output,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )

    start, cpu_start = time.perf_counter(), time.process_time()
    engine.fit(model, datamodule=datamodule)
    fit_time = time.perf_counter() - start
    metrics = engine.test(model, datamodule=datamodule, verbose=False)[0]
    total_time = time.perf_counter() - start
    cpu_time = time.process_time() - cpu_start

    trainer = engine.trainer
    lr = trainer.optimizers[0].param_groups[0]["initial_lr"]
    num_train, num_val, num_test = len(datamodule.train_data), len(datamodule.val_data), len(datamodule.test_data)
    rule = f"{model.lr:g} x items / {LR_REFERENCE_BATCH}" if model.scale_lr else "not scaled"
    rows = [
        ("model", f"MCL one-class, {args.backbone}, head 512-2048-128, SEI harmonic over 8 views"),
        ("protocol", f"Fashion-MNIST, normal class {datamodule.category!r} vs the 9 others"),
        ("train", f"{num_train} normal images (seeded subset of 6,000), {args.image_size} px, no normalisation"),
        ("validation / test", f"{num_val} / {num_test} images (stratified subset of the 10,000 test images)"),
        ("hardware", common.hardware_description(model.device)),
        ("epochs / steps", f"{args.epochs} / {trainer.global_step}"),
        ("batch", f"{args.batch_size} images = {4 * args.batch_size} items, lr {lr:.4g} ({rule}), cosine"),
        ("seed", str(args.seed)),
        ("image_AUROC", f"{metrics['image_AUROC']:.4f}"),
        ("image_F1Score", f"{metrics['image_F1Score']:.4f}"),
        ("time", f"fit (train + Gaussians + validation) {fit_time:.0f} s, total {total_time:.0f} s wall"),
        ("CPU time", f"{cpu_time:.0f} s (all threads; wall / CPU shows how much the cores were shared)"),
    ]
    width = max(len(name) for name, _ in rows)
    print()
    print(f"| {'':<{width}} | MCL on Fashion-MNIST |")
    print(f"|{'-' * (width + 2)}|{'-' * 22}|")
    for name, value in rows:
        print(f"| {name:<{width}} | {value} |")


if __name__ == "__main__":
    main()
