"""LearningCurve callback: curve from epoch 0 on the validation split, files, AULC, no effect on training."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from anomalib.engine import Engine
from cli_utils import digits_folder_datamodule
from lightning.pytorch import seed_everything

from anomalib_firm.callbacks import LearningCurve, area_under_learning_curve, raw_pixel_knn_scores
from anomalib_firm.models import Firm


def test_area_under_learning_curve_by_hand() -> None:
    # Trapezoids (0->1: 0.75, 1->3: 2.0) over a span of 3 epochs.
    assert area_under_learning_curve([0, 1, 3], [0.5, 1.0, 1.0]) == pytest.approx(2.75 / 3)
    assert area_under_learning_curve([0, 2], [0.8, 0.8]) == pytest.approx(0.8)
    assert math.isnan(area_under_learning_curve([0], [0.9]))


def test_raw_pixel_knn_matches_a_loop() -> None:
    generator = torch.Generator().manual_seed(0)
    train, images = torch.rand(7, 1, 4, 4, generator=generator), torch.rand(3, 1, 4, 4, generator=generator)
    scores = raw_pixel_knn_scores(train, images, num_neighbors=2)
    for index, image in enumerate(images):
        distances = sorted(float((image - other).pow(2).sum().sqrt()) for other in train)
        assert float(scores[index]) == pytest.approx((distances[0] + distances[1]) / 2, rel=1e-5)


def _tiny_firm() -> Firm:
    return Firm(image_size=16, head_hidden_dim=64, head_layers=3, visualizer=False)


def _fit(root: Path, workdir: Path, callbacks: list) -> Firm:
    seed_everything(0, verbose=False)
    model = _tiny_firm()
    engine = Engine(
        max_epochs=2, callbacks=callbacks, default_root_dir=workdir, logger=False, enable_progress_bar=False
    )
    engine.fit(model=model, datamodule=digits_folder_datamodule(root, train_batch_size=16))
    return model


def test_curve_from_epoch_zero_without_changing_training(digits_folder: Path, tmp_path: Path) -> None:
    curve = LearningCurve(output_dir=tmp_path / "curve")
    with_curve = _fit(digits_folder, tmp_path / "a", [curve])
    without_curve = _fit(digits_folder, tmp_path / "b", [])

    rows = list(csv.DictReader((tmp_path / "curve" / "learning_curve.csv").open()))
    assert [int(row["epoch"]) for row in rows] == [0, 1, 2]
    assert [int(row["step"]) for row in rows] == [0, 3, 6]  # 40 images, batches of 16
    aurocs = [float(row["val_auroc"]) for row in rows]
    assert all(0.5 < value <= 1 for value in aurocs)  # digit 0 against the rest: far above chance
    assert len({float(row["raw_pixel_val_auroc"]) for row in rows}) == 1
    assert (tmp_path / "curve" / "learning_curve.png").stat().st_size > 0
    assert curve.aulc() == pytest.approx(area_under_learning_curve([0, 1, 2], aurocs))

    # The evaluations restore every random stream and run in eval mode: the same weights, BatchNorm
    # statistics and bank result (the scorer reads the training images in order).
    for (name, a), b in zip(with_curve.model.state_dict().items(), without_curve.model.state_dict().values()):
        torch.testing.assert_close(a, b, msg=f"{name} differs with the callback")


def test_curve_rejects_other_models() -> None:
    with pytest.raises(TypeError, match="anomalib_firm models"):
        LearningCurve._check_model(torch.nn.Linear(1, 1))  # type: ignore[arg-type]
