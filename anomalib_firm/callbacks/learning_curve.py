r"""Learning curves on the validation split: does training help, and from which epoch.

:class:`LearningCurve` is a Lightning callback for FIRM, MSC and MCL. It fits the model's scorer
with the current weights and computes the validation image AUROC of the raw scores at epoch 0
(the untrained network, before the first step) and every ``every_n_epochs`` epochs, next to the
AUROC of a raw-pixel k-NN on the same images. It writes ``learning_curve.csv`` and
``learning_curve.png`` and prints the area under the learning curve (AULC). The test split is
never read.

With the stock command::

    anomalib train --model FIRM --data ... --trainer.callbacks anomalib_firm.callbacks.LearningCurve \\
        --trainer.callbacks.every_n_epochs 2

Evaluating does not change training: the random streams (Python, NumPy, torch) are restored
afterwards and the network is scored in eval mode, so a seeded run gives the same weights with
and without the callback.
"""

from __future__ import annotations

import csv
import itertools
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_only
from sklearn.metrics import roc_auc_score

from anomalib_firm.models.components.lifecycle.random_state import preserved_random_state

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CurvePoint:
    """One evaluation: epochs trained, optimiser steps, validation AUROC of the model and of raw pixels."""

    epoch: int
    step: int
    auroc: float
    raw_pixel_auroc: float


def raw_pixel_knn_scores(train_images: torch.Tensor, images: torch.Tensor, num_neighbors: int = 5) -> torch.Tensor:
    """Mean L2 distance of each image to its ``k`` nearest training images, on raw pixels.

    Args:
        train_images: ``(N, C, H, W)`` normal training images.
        images: ``(M, C, H, W)`` images to score, same size.
        num_neighbors: ``k`` (clamped to ``N``).

    Returns:
        ``(M,)`` scores, higher = more anomalous.
    """
    k = min(num_neighbors, train_images.shape[0])
    distances = torch.cdist(images.flatten(1).float(), train_images.flatten(1).float())
    return distances.topk(k, dim=1, largest=False).values.mean(dim=1)


def area_under_learning_curve(epochs: list[int], aurocs: list[float]) -> float:
    """Trapezoid area under AUROC(epoch) divided by the epoch span: the curve's mean AUROC, 1 at best.

    The FIRM paper integrates its AUROC curves the same way to compare convergence; dividing by
    the span makes runs of different lengths comparable. ``nan`` with fewer than two points.
    """
    points = [(epoch, auroc) for epoch, auroc in zip(epochs, aurocs, strict=True) if not math.isnan(auroc)]
    if len(points) < 2 or points[-1][0] == points[0][0]:
        return float("nan")
    area = sum((e1 - e0) * (a0 + a1) / 2 for (e0, a0), (e1, a1) in itertools.pairwise(points))
    return area / (points[-1][0] - points[0][0])


def _auroc(labels: torch.Tensor, scores: torch.Tensor) -> float:
    labels_np = labels.numpy()
    if len(np.unique(labels_np)) < 2:
        return float("nan")
    return float(roc_auc_score(labels_np, scores.numpy()))


def validation_auroc(module: Any, datamodule: Any) -> float:
    """Image AUROC on the validation split of one of our models, its scorer refitted on the normal training images.

    The random streams are left as they were (the fit reads the training loader in order), so
    evaluating does not change the training run it observes. ``nan`` when the split holds one class.
    """
    with preserved_random_state():
        module.fit_scorer_from_loader(datamodule.train_dataloader())
        scores, labels = module.score_loader(datamodule.val_dataloader())
    return _auroc(labels, scores)


class LearningCurve(Callback):
    """Validation AUROC at epoch 0 and every ``every_n_epochs`` epochs, with a raw-pixel k-NN baseline.

    Needs one of this package's models (it calls their scorer) and a data module whose
    validation split holds normal and anomalous images (anomalib's default: part of the test
    split, ``val_split_mode="from_test"``).

    Args:
        every_n_epochs: Evaluate after every this many epochs (the last epoch always).
        output_dir: Where ``learning_curve.csv`` and ``learning_curve.png`` go; default
            ``<trainer.default_root_dir>/learning_curve`` (anomalib's results folder of the run).
        num_neighbors: ``k`` of the raw-pixel k-NN baseline.
        plot: Write the PNG plot (needs matplotlib).
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        output_dir: str | Path | None = None,
        num_neighbors: int = 5,
        plot: bool = True,
    ) -> None:
        if every_n_epochs < 1:
            msg = f"every_n_epochs must be >= 1, got {every_n_epochs}."
            raise ValueError(msg)
        self.every_n_epochs = every_n_epochs
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.num_neighbors = num_neighbors
        self.plot = plot
        self.points: list[CurvePoint] = []
        self._raw_pixel_auroc: float | None = None

    # ----------------------------------------------------------------- Lightning hooks
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """The untrained network (epoch 0), unless the run resumes from a checkpoint."""
        self._check_model(pl_module)
        if trainer.current_epoch == 0 and trainer.global_step == 0:
            self._record(trainer, pl_module, epoch=0)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Evaluate every ``every_n_epochs`` epochs and after the last one."""
        epoch = trainer.current_epoch + 1
        last = trainer.max_epochs is not None and epoch >= trainer.max_epochs
        if epoch % self.every_n_epochs == 0 or last:
            self._record(trainer, pl_module, epoch=epoch)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Write the plot and print the area under the curve."""
        del pl_module
        if not self.points or not trainer.is_global_zero:
            return
        directory = self._directory(trainer)
        if self.plot:
            self._write_plot(directory / "learning_curve.png", trainer)
        self._print(
            trainer,
            f"Learning curve: AULC {self.aulc():.4f} over epochs {self.points[0].epoch}-{self.points[-1].epoch} "
            f"(validation AUROC {self.points[0].auroc:.4f} untrained -> {self.points[-1].auroc:.4f}; "
            f"raw-pixel {self.num_neighbors}-NN {self.points[-1].raw_pixel_auroc:.4f}); written to {directory}",
        )

    # ----------------------------------------------------------------- results
    def aulc(self) -> float:
        """Area under the recorded curve divided by its epoch span (see :func:`area_under_learning_curve`)."""
        return area_under_learning_curve([p.epoch for p in self.points], [p.auroc for p in self.points])

    # ----------------------------------------------------------------- internals
    @staticmethod
    def _check_model(pl_module: LightningModule) -> None:
        if not (hasattr(pl_module, "fit_scorer_from_loader") and hasattr(pl_module, "score_loader")):
            msg = (
                f"LearningCurve works with the anomalib_firm models (Firm, Msc, Mcl), not {type(pl_module).__name__}: "
                "it fits their scorer with the current weights."
            )
            raise TypeError(msg)

    def _record(self, trainer: Trainer, pl_module: Any, epoch: int) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None:
            msg = "LearningCurve needs a data module (with a validation split) in trainer.fit."
            raise RuntimeError(msg)
        auroc = validation_auroc(pl_module, datamodule)
        if self._raw_pixel_auroc is None:
            with preserved_random_state():
                self._raw_pixel_auroc = self._raw_pixel_baseline(pl_module, datamodule)
        point = CurvePoint(epoch, int(trainer.global_step), auroc, self._raw_pixel_auroc)
        if math.isnan(point.auroc) and not self.points:
            logger.warning("LearningCurve: the validation split holds one class only; AUROC is undefined (nan).")
        self.points.append(point)
        if trainer.is_global_zero:
            self._write_csv(self._directory(trainer) / "learning_curve.csv")
            self._print(
                trainer,
                f"Learning curve: epoch {epoch} (step {point.step}) validation AUROC {point.auroc:.4f} "
                f"(raw-pixel {self.num_neighbors}-NN {point.raw_pixel_auroc:.4f})",
            )

    def _raw_pixel_baseline(self, pl_module: Any, datamodule: Any) -> float:
        """Raw-pixel k-NN AUROC on the validation images, resized as the model sees them."""
        with torch.no_grad():
            train = torch.cat([pl_module._resized_on_device(b.image).cpu() for b in datamodule.train_dataloader()])
            images, labels = [], []
            for batch in datamodule.val_dataloader():
                images.append(pl_module._resized_on_device(batch.image).cpu())
                labels.append(torch.as_tensor(batch.gt_label).long().cpu())
        return _auroc(torch.cat(labels), raw_pixel_knn_scores(train, torch.cat(images), self.num_neighbors))

    def _directory(self, trainer: Trainer) -> Path:
        directory = self.output_dir or Path(trainer.default_root_dir) / "learning_curve"
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    def _write_csv(self, path: Path) -> None:
        with path.open("w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(["epoch", "step", "val_auroc", "raw_pixel_val_auroc"])
            for point in self.points:
                writer.writerow([point.epoch, point.step, f"{point.auroc:.6f}", f"{point.raw_pixel_auroc:.6f}"])

    def _write_plot(self, path: Path, trainer: Trainer) -> None:
        import matplotlib as mpl

        mpl.use("Agg", force=False)
        from matplotlib import pyplot as plt

        figure, axes = plt.subplots(figsize=(6, 4))
        epochs = [p.epoch for p in self.points]
        axes.plot(epochs, [p.auroc for p in self.points], marker="o", label=type(trainer.lightning_module).__name__)
        axes.axhline(
            self.points[0].raw_pixel_auroc, color="grey", linestyle="--", label=f"raw-pixel {self.num_neighbors}-NN"
        )
        axes.set_xlabel("epoch (0 = untrained)")
        axes.set_ylabel("validation image AUROC")
        axes.set_title(f"AULC {self.aulc():.4f}")
        axes.grid(alpha=0.3)
        axes.legend()
        figure.tight_layout()
        figure.savefig(path, dpi=100)
        plt.close(figure)

    @staticmethod
    @rank_zero_only
    def _print(trainer: Trainer, message: str) -> None:
        progress_bar = getattr(trainer, "progress_bar_callback", None)
        if progress_bar is not None and hasattr(progress_bar, "print"):
            progress_bar.print(message)
        else:
            print(message)
