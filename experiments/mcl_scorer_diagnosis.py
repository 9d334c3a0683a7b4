r"""Is a short MCL run held back by its SEI Gaussians or by its features? One network, three scorers.

For each task an MCL model trains from scratch as in ``short_run_curves.py`` (same data, loop,
optimiser and schedule; the SEI numbers equal that tool's), and at epoch 0 and after the last
epoch the same network is scored on the *validation* split three ways: MCL's own SEI score, and a
k-NN score (mean cosine similarity to the ``k`` nearest normal training images in the same
rotation, averaged over the 4 rotations, negated) on the encoder features and on the head
embeddings. If k-NN on the same features beat SEI, the scorer would be the limit; if not, the
features are. Diagnostic only: the package's MCL always scores with SEI.

Example (2-core CPU, about 4.5 min a Fashion-MNIST task):

    python experiments/mcl_scorer_diagnosis.py --tasks fashion_mnist:0 fashion_mnist:4
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))  # the benchmarks' shared helpers
import _bench_common as common
import short_run_curves
import torch


def knn_aurocs(
    model: Any, train_images: torch.Tensor, val_images: torch.Tensor, labels: torch.Tensor, k: int
) -> dict[str, float]:
    """Validation AUROC of the k-NN score per rotation on the encoder features and the head embeddings."""
    from sklearn.metrics import roc_auc_score

    from anomalib_firm.models.components.scoring.feature_bank import cosine_topk_similarity
    from anomalib_firm.models.components.views.rotations import NUM_ROTATIONS, expand_rotations

    def rotation_features(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rotated, _ = expand_rotations(images)
        encoded = model.model.encoder(rotated)
        shape = (NUM_ROTATIONS, images.shape[0], -1)
        return encoded.view(shape), model.model.head(encoded).view(shape)

    model.eval()
    with torch.no_grad():
        train_features = rotation_features(train_images)
        val_features = rotation_features(val_images)
    aurocs = {}
    for name, bank, queries in zip(("k-NN encoder", "k-NN head"), train_features, val_features, strict=True):
        scores = -cosine_topk_similarity(queries, bank, k).mean(dim=0)  # per rotation, then averaged over rotations
        aurocs[name] = roc_auc_score(labels.numpy(), scores.numpy())
    return aurocs


def diagnose(task: str, args: argparse.Namespace, workdir: Path) -> list[list[Any]]:
    """Train one MCL run on ``task``; a table row per evaluated epoch (SEI, k-NN encoder, k-NN head)."""
    from lightning.pytorch import seed_everything

    from anomalib_firm.callbacks import validation_auroc

    seed_everything(args.seed, verbose=False)
    dm = short_run_curves.datamodule(task, args.seed, workdir, args.train_batch_size)
    model, loader, optimizer, scheduler = short_run_curves.prepared_model("mcl", json.loads(args.kw), dm, args.epochs)
    train_images, val_images, val_labels = short_run_curves.scoring_images(dm)
    rows = []

    def evaluate(epoch: int) -> None:
        sei = validation_auroc(model, dm)  # refits the Gaussians and the BatchNorm statistics the k-NN then uses
        knn = knn_aurocs(model, train_images, val_images, val_labels, args.neighbors)
        rows.append([task, epoch, f"{sei:.3f}", *(f"{value:.3f}" for value in knn.values())])
        print(" ".join(str(cell) for cell in rows[-1]), flush=True)

    evaluate(0)
    for _ in range(args.epochs):
        short_run_curves.train_one_epoch(model, loader, optimizer, scheduler)
    evaluate(args.epochs)
    return rows


def main() -> None:
    """Parse the arguments, diagnose every task, print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["fashion_mnist:0"], help="digits:<d> or fashion_mnist:<c>")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--train-batch-size", type=int, default=32, help="images per training batch")
    parser.add_argument("--neighbors", type=int, default=1, help="k of the k-NN scores")
    parser.add_argument("--kw", default="{}", help="MCL options as JSON")
    args = parser.parse_args()

    common.quiet_warnings()
    print(common.hardware_description())
    print(f"MCL options={args.kw} epochs={args.epochs} seed={args.seed} train_batch_size={args.train_batch_size}")
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for task in args.tasks:
            rows += diagnose(task, args, Path(workdir))
    header = ["task", "epoch", "SEI", f"{args.neighbors}-NN encoder", f"{args.neighbors}-NN head"]
    print(common.format_table(header, rows))


if __name__ == "__main__":
    main()
