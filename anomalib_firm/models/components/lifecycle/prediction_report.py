r"""Each predicted image's score and label, on the console and in ``predictions.csv``.

``anomalib predict`` (anomalib 2.7) prints nothing per image: its pictures are all a user gets,
and for image-level models they carried no score. Our models add :class:`PredictionReport` to
their callbacks (``configure_callbacks``), so ``anomalib predict --model FIRM --ckpt_path ...
--data <folder or image>`` ends with a table of the images, their scores and labels (the first
:data:`MAX_PRINTED_ROWS`), a count of anomalous and normal images, and
``<results>/predictions.csv`` with every image. Scores are the post-processor's normalised ones
(the threshold learnt on the validation split maps to 0.5, as in the saved pictures and in
``OpenVINOInferencer``'s results).

Any other anomalib model can use it too: ``--trainer.callbacks anomalib_firm.callbacks.PredictionReport``.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from anomalib_firm.data.labels import label_name
from anomalib_firm.models.components.lifecycle import distributed

#: Rows printed on the console; ``predictions.csv`` holds every image.
MAX_PRINTED_ROWS = 50

#: Columns of ``predictions.csv``.
COLUMNS = ("image_path", "pred_score", "pred_label", "gt_label")


def _values(batch: Any, field: str) -> list[Any]:
    """A batch field as a list with one entry per image (``None`` entries when the batch lacks it)."""
    value = getattr(batch, field, None)
    size = len(batch.image_path) if getattr(batch, "image_path", None) is not None else len(batch.pred_score)
    if value is None:
        return [None] * size
    if isinstance(value, torch.Tensor):
        return value.detach().float().reshape(size, -1)[:, 0].cpu().tolist()
    return list(value)


class PredictionReport(Callback):
    """Collect every predicted image's score and label; print them and write ``predictions.csv`` at the end.

    Args:
        max_printed_rows: Images listed on the console (all are in the CSV file); 0 prints only the summary.
        filename: Name of the CSV file, written in the trainer's ``default_root_dir``.
    """

    def __init__(self, max_printed_rows: int = MAX_PRINTED_ROWS, filename: str = "predictions.csv") -> None:
        self.max_printed_rows = max_printed_rows
        self.filename = filename
        self.rows: list[dict[str, Any]] = []

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start a new report."""
        del trainer, pl_module
        self.rows = []

    def on_predict_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Record the batch's images (after the post-processor, which runs before this callback)."""
        del trainer, pl_module, batch_idx, dataloader_idx
        predictions = outputs if outputs is not None and hasattr(outputs, "pred_score") else batch
        if getattr(predictions, "pred_score", None) is None:
            return
        for path, score, label, truth in zip(
            _values(predictions, "image_path"),
            _values(predictions, "pred_score"),
            _values(predictions, "pred_label"),
            _values(predictions, "gt_label"),
            strict=True,
        ):
            self.rows.append(
                {
                    "image_path": "" if path is None else str(path),
                    "pred_score": score,
                    "pred_label": label_name(label) or "",
                    "gt_label": label_name(truth) or "",
                }
            )

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Gather the ranks' rows (DDP), then on rank 0 write ``predictions.csv`` and print the table."""
        rows = self.rows
        if distributed.world_size() > 1:
            gathered: list[Any] = [None] * distributed.world_size()
            torch.distributed.all_gather_object(gathered, rows)
            seen: set[str] = set()
            rows = []
            for row in (row for part in gathered for row in part):  # the sampler's padded repeats once
                if row["image_path"] not in seen:
                    seen.add(row["image_path"])
                    rows.append(row)
        if distributed.rank() != 0 or not rows:
            return
        path = Path(trainer.default_root_dir) / self.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        pictures = getattr(getattr(pl_module, "visualizer", None), "output_dir", None)
        print(self.format(rows, getattr(pl_module, "name", type(pl_module).__name__), path, pictures))

    def format(self, rows: list[dict[str, Any]], model: str, csv_path: Path, pictures: Any) -> str:
        """The console report of ``rows``."""
        anomalous = sum(row["pred_label"] == "anomalous" for row in rows)
        lines = [
            f"{model}: {len(rows)} images predicted, {anomalous} anomalous, {len(rows) - anomalous} normal "
            "(score normalised by the post-processor: threshold 0.5)",
        ]
        shown = rows[: self.max_printed_rows]
        if shown:
            with_truth = any(row["gt_label"] for row in shown)
            lines.append(f"{'score':>7}  {'label':<9}  " + ("truth      " if with_truth else "") + "image")
            for row in shown:
                score = "" if row["pred_score"] is None else f"{row['pred_score']:.3f}"
                truth = f"{row['gt_label']:<9}  " if with_truth else ""
                lines.append(f"{score:>7}  {row['pred_label']:<9}  {truth}{row['image_path']}")
        if len(rows) > len(shown):
            lines.append(f"... {len(rows) - len(shown)} more images in {csv_path}")
        lines.append(f"Scores and labels of every image: {csv_path}")
        if pictures is not None:
            lines.append(f"Pictures with score and label: {pictures}")
        return "\n".join(lines)
