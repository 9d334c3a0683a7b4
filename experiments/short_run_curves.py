r"""Validation learning curves of short runs, several tasks and seeds, one table.

For each (task, seed) a model trains from its starting network (random, or its ``weights``) with its
own ``training_loss``, optimiser and learning-rate schedule (``configure_optimizers``) in a plain
loop (no Trainer: about twice as fast as the CLI on 2 cores, same code paths for the loss and the
scorer), and the scorer is refitted and scored on the *validation* split at epoch 0 (the starting
network) and every
``--every`` epochs (the test split is never read). Beside each curve: the raw-pixel 5-NN on the
same images. Prints one row per run and the mean curve per task.

``--bn-statistics`` scores every point once per listed choice of the BatchNorm statistics the
scorer is fitted with: ``model`` (the model's own ``bn_recalibration``), or a copy of the model
with ``bn_recalibration`` set to ``moving`` (false: the moving averages of training),
``normal_images`` or ``training_views`` (FIRM and MCL): one training run, several scorings.

Tasks: ``digits:<d>`` (scikit-learn's 8x8 digit ``d`` written as a 32 px anomalib ``Folder``
tree, batches of 32 images) or ``fashion_mnist:<c>`` (by default the quick protocol's data: 300 training
images, 2,000 test images of which 400 validation, batches of 16; ``--max-train-images 0
--max-test-images 0`` gives the medium protocol's whole splits; Debian package
``dataset-fashion-mnist``).

Example (2-core CPU, about 80 s a run at 32 px):

    python experiments/short_run_curves.py --model firm --tasks digits:3 digits:5 --seeds 0 1 2 --epochs 5
    python experiments/short_run_curves.py --model firm --tasks fashion_mnist:5 --epochs 4 --every 2 \\
        --kw '{"image_size": 16}' --bn-statistics moving training_views
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))  # the benchmarks' shared helpers
import _bench_common as common
import torch


def datamodule(
    task: str,
    seed: int,
    workdir: Path,
    train_batch_size: int | None = None,
    max_train_images: int | None = 300,
    max_test_images: int | None = 2000,
) -> Any:
    """The task's data module, set up (a digits Folder tree is written under ``workdir`` once).

    ``train_batch_size`` replaces the task's default (32 digits, 16 Fashion-MNIST images);
    ``max_train_images`` / ``max_test_images`` size the Fashion-MNIST subsets (``None``: whole split).
    """
    kind, _, category = task.partition(":")
    if kind == "digits":
        from anomalib.data import Folder

        from anomalib_firm.data.digits import write_digits_folder

        root = workdir / f"digits_{category}"
        if not root.exists():
            write_digits_folder(root, digit=int(category))
        dm = Folder(
            name=f"digits_{category}",
            root=root,
            normal_dir="train/good",
            abnormal_dir="test/bad",
            normal_test_dir="test/good",
            train_batch_size=train_batch_size or 32,
            eval_batch_size=64,
            num_workers=0,
            seed=seed,
        )
    elif kind == "fashion_mnist":
        from anomalib_firm.data import FashionMNIST

        dm = FashionMNIST(
            category=category,
            train_batch_size=train_batch_size or 16,
            eval_batch_size=256,
            max_train_images=max_train_images,
            max_test_images=max_test_images,
            seed=seed,
        )
    else:
        msg = f"task {task!r}: use digits:<0-9> or fashion_mnist:<0-9>"
        raise SystemExit(msg)
    dm.setup()
    return dm


def scored_validation_auroc(model: Any, dm: Any, bn_statistics: str) -> float:
    """The validation image AUROC of the model as it is (``model``) or of a copy with another ``bn_recalibration``."""
    from anomalib_firm.callbacks import validation_auroc
    from anomalib_firm.models.components.lifecycle.scorer_fitting import batchnorm_recalibration_mode

    if bn_statistics == "model":
        return validation_auroc(model, dm)
    scored = copy.deepcopy(model)
    scored.bn_recalibration = batchnorm_recalibration_mode(False if bn_statistics == "moving" else bn_statistics)
    return validation_auroc(scored, dm)


def pooled_knn_auroc(model: Any, dm: Any, bn_statistics: str = "moving", num_neighbors: int = 2) -> float:
    """Validation AUROC of a cosine k-NN on the network's pooled encoder features (DN2 / MSC's scorer).

    Evaluation view as MSC's (zoom 256 / 224, centre crop back), features L2-normalised, bank = the
    normal training images. ``bn_statistics``: ``moving`` (the BatchNorm layers' moving averages, as
    the network holds them) or ``normal_images`` (recomputed on a copy from the normal training
    images' evaluation view). For FIRM and MCL trained from pretrained weights this scores their
    encoder as MSC scores its network.
    """
    from sklearn.metrics import roc_auc_score

    from anomalib_firm.models.components.backbones.batch_norm import recalibrate_batchnorm
    from anomalib_firm.models.components.lifecycle.random_state import preserved_random_state
    from anomalib_firm.models.components.views.augmentations import crop_and_resize
    from anomalib_firm.models.image.msc.torch_model import MSC_EVAL_ZOOM, centre_box

    network = copy.deepcopy(model.model) if bn_statistics == "normal_images" else model.model

    def features(images: torch.Tensor) -> torch.Tensor:
        if hasattr(network, "features"):  # MSC: normalised features of its evaluation view
            return network.features(images)
        box = centre_box(MSC_EVAL_ZOOM).to(images.device).expand(images.shape[0], 4)
        view = crop_and_resize(images, box, (images.shape[-2], images.shape[-1]))
        pooled = network.encoder(network.normalize(view) if hasattr(network, "normalize") else view)
        return torch.nn.functional.normalize(pooled.float(), dim=-1)

    was_training = network.training
    network.eval()
    with torch.no_grad(), preserved_random_state():
        train_images = [model._resized_on_device(batch.image) for batch in dm.train_dataloader()]
        if bn_statistics == "normal_images":
            recalibrate_batchnorm(network, train_images, features)
        bank = torch.cat([features(images) for images in train_images])
        scores, labels = [], []
        for batch in dm.val_dataloader():
            similarity = features(model._resized_on_device(batch.image)) @ bank.T
            scores.append(-similarity.topk(num_neighbors, dim=1).values.mean(dim=1))
            labels.append(torch.as_tensor(batch.gt_label).long())
    network.train(was_training)
    return float(roc_auc_score(torch.cat(labels).numpy(), torch.cat(scores).numpy()))


def prepared_model(model_name: str, options: dict[str, Any], dm: Any, epochs: int) -> tuple[Any, Any, Any, Any]:
    """A fresh model ready to train on ``dm`` for ``epochs``: ``(model, train loader, optimiser, scheduler or None)``.

    The optimiser and per-step schedule are the model's own (``configure_optimizers``, which reads
    the run's step count from a stand-in for the Trainer).
    """
    from anomalib_firm.models import Firm, Mcl, Msc

    model_class = {"firm": Firm, "mcl": Mcl, "msc": Msc}[model_name]
    model = model_class(visualizer=False, evaluator=False, post_processor=False, **options)
    loader = dm.train_dataloader()
    model._trainer = SimpleNamespace(  # what configure_optimizers reads of a Trainer
        estimated_stepping_batches=epochs * len(loader),
        datamodule=dm,
        accumulate_grad_batches=1,
        world_size=1,
        train_dataloader=loader,
    )
    model.load_pretrained_weights()  # as on_fit_start (models given ``weights``; a no-op otherwise)
    if model_name == "msc":  # as Msc.on_fit_start: the centre from the pretrained network
        model.compute_center(batch.image for batch in dm.train_dataloader())
    config = model.configure_optimizers()  # FIRM, MCL: optimiser and per-step schedule; MSC: a constant-rate SGD
    optimizer = config["optimizer"] if isinstance(config, dict) else config
    scheduler = config["lr_scheduler"]["scheduler"] if isinstance(config, dict) else None
    model.prepare_training()
    return model, loader, optimizer, scheduler


def train_one_epoch(model: Any, loader: Any, optimizer: Any, scheduler: Any) -> list[float]:
    """One epoch of the model's own ``training_loss``, stepping the schedule per step; the losses."""
    model.train()
    losses = []
    for batch in loader:
        images = torch.Tensor.as_subclass(batch.image, torch.Tensor)
        loss, _ = model.training_loss(images, model.training_class_labels(batch))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        losses.append(float(loss.detach()))
    return losses


def scoring_images(dm: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(normal training images, validation images, validation labels) of a set-up data module."""
    train_images = torch.cat([batch.image for batch in dm.train_dataloader()])
    val_batches = list(dm.val_dataloader())
    val_images = torch.cat([batch.image for batch in val_batches])
    val_labels = torch.cat([torch.as_tensor(batch.gt_label) for batch in val_batches])
    return train_images, val_images, val_labels


def run(args: argparse.Namespace, task: str, seed: int, workdir: Path) -> dict[str, Any]:
    """One run from scratch: its validation curve, the raw-pixel baseline and the loss at both ends."""
    from lightning.pytorch import seed_everything
    from sklearn.metrics import roc_auc_score

    from anomalib_firm.callbacks.learning_curve import raw_pixel_knn_scores

    seed_everything(seed, verbose=False)
    dm = datamodule(
        task, seed, workdir, args.train_batch_size, args.max_train_images or None, args.max_test_images or None
    )
    model, loader, optimizer, scheduler = prepared_model(args.model, json.loads(args.kw), dm, args.epochs)
    train_images, val_images, val_labels = scoring_images(dm)
    raw = roc_auc_score(val_labels.numpy(), raw_pixel_knn_scores(train_images, val_images).numpy())
    # The pooled k-NN first: the model's own scorer may recalibrate the BatchNorm statistics in place.
    scorers = {
        f"pooled 2-NN, BN {mode}": functools.partial(pooled_knn_auroc, bn_statistics=mode) for mode in args.pooled_knn
    }
    for mode in args.bn_statistics:
        scorers[mode] = functools.partial(scored_validation_auroc, bn_statistics=mode)
    curves = {label: [score(model, dm)] for label, score in scorers.items()}
    losses: list[float] = []
    started = time.monotonic()

    def report(epoch: int) -> None:  # one line per point: a long run killed part-way keeps its curve
        points = ", ".join(f"{mode} {curve[-1]:.3f}" for mode, curve in curves.items())
        loss = f"loss {losses[-1]:.3f}, " if losses else ""
        minutes = (time.monotonic() - started) / 60
        print(f"  {task} seed {seed} epoch {epoch}: {points} ({loss}{minutes:.1f} min)", flush=True)

    print(f"  {task} seed {seed} raw-pixel 5-NN: {raw:.3f}", flush=True)
    report(0)
    for epoch in range(1, args.epochs + 1):
        losses += train_one_epoch(model, loader, optimizer, scheduler)
        if epoch % args.every == 0 or epoch == args.epochs:
            for label, score in scorers.items():
                curves[label].append(score(model, dm))
            report(epoch)
    return {
        "task": task,
        "seed": seed,
        "raw": raw,
        "curves": curves,
        "loss": (losses[0], losses[-1]) if losses else (float("nan"), float("nan")),
    }


def main() -> None:
    """Parse the arguments, run every (task, seed), print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("firm", "mcl", "msc"), default="firm")
    parser.add_argument("--tasks", nargs="+", default=["digits:5"], help="digits:<d> or fashion_mnist:<c>")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--every", type=int, default=1, help="evaluate every this many epochs")
    parser.add_argument("--train-batch-size", type=int, help="images per training batch (default: the task's)")
    parser.add_argument(
        "--max-train-images", type=int, default=300, help="Fashion-MNIST training subset (0: the whole normal class)"
    )
    parser.add_argument(
        "--max-test-images", type=int, default=2000, help="Fashion-MNIST test subset, validation included (0: all)"
    )
    parser.add_argument("--kw", default="{}", help="model options as JSON, e.g. '{\"image_size\": 16}'")
    parser.add_argument(
        "--bn-statistics",
        nargs="+",
        choices=("model", "moving", "normal_images", "training_views"),
        default=["model"],
        help="score every point with each: the model's own bn_recalibration, or this one on a copy",
    )
    parser.add_argument(
        "--pooled-knn",
        nargs="*",
        choices=("moving", "normal_images"),
        default=[],
        help="also score every point with a cosine 2-NN on the pooled encoder features (MSC's scorer), with "
        "the BatchNorm statistics named (moving averages, or recomputed on the normal images)",
    )
    args = parser.parse_args()
    if "training_views" in args.bn_statistics and args.model == "msc":
        parser.error("MSC keeps its BatchNorm in eval mode: --bn-statistics training_views is for FIRM and MCL")

    common.quiet_warnings()
    print(common.hardware_description())
    print(
        f"model={args.model} options={args.kw} epochs={args.epochs} every={args.every} bn={args.bn_statistics}"
        f" train_batch_size={args.train_batch_size or 'task default'}"
    )
    rows, curves = [], {}
    with tempfile.TemporaryDirectory() as workdir:
        for task in args.tasks:
            for seed in args.seeds:
                result = run(args, task, seed, Path(workdir))
                loss = f"{result['loss'][0]:.3f} -> {result['loss'][1]:.3f}"
                for mode, curve in result["curves"].items():
                    curves.setdefault((task, mode), []).append(curve)
                    points = " ".join(f"{value:.3f}" for value in curve)
                    rows.append([task, seed, mode, points, f"{result['raw']:.3f}", loss])
                    print(f"{task} seed {seed} {mode}: {points} (raw {result['raw']:.3f})", flush=True)
    header = ["task", "seed", "BN statistics", "validation AUROC, epoch 0 ... last", "raw 5-NN", "loss"]
    print(common.format_table(header, rows))
    for (task, mode), task_curves in curves.items():
        mean = torch.tensor(task_curves).mean(dim=0).tolist()
        print(f"mean {task} {mode}: " + " ".join(f"{value:.3f}" for value in mean))


if __name__ == "__main__":
    main()
