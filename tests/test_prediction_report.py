"""``anomalib predict`` with our models: each image's score and label on the console, in a CSV file, in its picture."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch
from anomalib.data import ImageItem
from cli_utils import digits_folder_datamodule
from PIL import Image

from anomalib_firm.callbacks import PredictionReport
from anomalib_firm.data.labels import prediction_caption
from anomalib_firm.data.visualization import InMemoryImageVisualizer
from anomalib_firm.registry import model_names


def _item(**fields) -> ImageItem:
    return ImageItem(image=torch.rand(3, 16, 16), image_path=None, **fields)


def test_caption_names_label_score_and_truth():
    item = _item(pred_score=torch.tensor(0.7041), pred_label=torch.tensor(True), gt_label=torch.tensor(0))
    assert prediction_caption(item) == "Anomalous, score 0.704 (truth: normal)"
    assert prediction_caption(_item(pred_score=torch.tensor(0.2), pred_label=torch.tensor(False))) == (
        "Normal, score 0.200"
    )
    assert prediction_caption(_item()) is None


def test_picture_of_an_image_level_prediction_is_the_image_once_with_its_prediction_below():
    visualizer = InMemoryImageVisualizer()  # anomalib's default fields and overlays
    scored = visualizer.draw(_item(pred_score=torch.tensor(0.7), pred_label=torch.tensor(True)))
    assert scored.width == 256  # anomalib draws the image three times here (overlays of absent fields)
    assert scored.height > 256  # caption strip
    assert max(scored.crop((0, 256, 256, scored.height)).convert("L").getdata()) > 128  # text drawn
    assert visualizer.draw(_item()).size == (256, 256)  # no score: no caption
    with_map = visualizer.draw(
        _item(pred_score=torch.tensor(0.7), pred_label=torch.tensor(True), anomaly_map=torch.rand(16, 16))
    )
    assert with_map.width == 512  # image, image + anomaly map (no predicted mask: left out)
    assert InMemoryImageVisualizer(show_prediction=False).draw(_item(pred_score=torch.tensor(0.7))).height == 256


def test_report_lists_at_most_the_set_rows_and_counts_all():
    rows = [
        {"image_path": f"im{i}.png", "pred_score": i / 10, "pred_label": "anomalous" if i >= 5 else "normal",
         "gt_label": ""}
        for i in range(10)
    ]  # fmt: skip
    text = PredictionReport(max_printed_rows=3).format(rows, "Firm", Path("out/predictions.csv"), None)
    assert "10 images predicted, 5 anomalous, 5 normal" in text
    assert "im2.png" in text
    assert "im3.png" not in text
    assert "... 7 more images in out/predictions.csv" in text


def test_predict_prints_and_saves_each_images_score_and_label(digits_folder, tmp_path, capsys):
    """What ``anomalib predict --model FIRM --ckpt_path ... --data <folder>`` runs (Engine.predict with data_path)."""
    from anomalib.engine import Engine

    from anomalib_firm.models import Firm

    images = tmp_path / "to_predict"
    images.mkdir()
    for path in [*sorted((digits_folder / "test" / "bad").glob("*.png"))[:3],
                 *sorted((digits_folder / "test" / "good").glob("*.png"))[:2]]:  # fmt: skip
        shutil.copy(path, images / path.name)
    torch.manual_seed(0)
    model = Firm(image_size=16, head_hidden_dim=32, head_layers=2, mixed_precision=False)
    engine = Engine(default_root_dir=tmp_path / "run", logger=False, enable_progress_bar=False, accelerator="cpu")
    engine.validate(model, datamodule=digits_folder_datamodule(digits_folder, 16))  # scorer and threshold
    capsys.readouterr()
    engine.predict(model, data_path=images)
    printed = capsys.readouterr().out

    assert "Firm: 5 images predicted" in printed
    rows = list(csv.DictReader((tmp_path / "run" / "predictions.csv").open()))
    assert sorted(Path(row["image_path"]).name for row in rows) == sorted(path.name for path in images.iterdir())
    for row in rows:
        score = float(row["pred_score"])
        assert row["pred_label"] == ("anomalous" if score >= 0.5 else "normal")  # the threshold maps to 0.5
        assert f"{score:.3f}  {row['pred_label']:<9}  {row['image_path']}" in printed
    pictures = sorted((tmp_path / "run" / "images").rglob("*.png"))
    assert len(pictures) == 5
    with Image.open(pictures[0]) as picture:
        assert picture.width == 256  # the image once
        assert picture.height > 256  # its prediction written below


@pytest.mark.parametrize("name", model_names())
def test_every_model_adds_the_report(name):
    from model_utils import tiny_model

    callbacks = tiny_model(name).configure_callbacks()
    assert isinstance(callbacks[-1], PredictionReport)
