"""Bad input fails early with a message that names the file or the setting."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from anomalib.data import Folder
from anomalib.engine import Engine
from cli_utils import digits_folder_datamodule, write_digits_folder

from anomalib_firm.console import TrainingDivergedError
from anomalib_firm.models import Firm


def _folder(root: Path) -> Folder:
    return digits_folder_datamodule(root, train_batch_size=8, eval_batch_size=32)


def _tiny_firm(**kwargs) -> Firm:
    return Firm(image_size=16, head_hidden_dim=32, head_layers=2, visualizer=False, **kwargs)


def _engine(tmp_path: Path) -> Engine:
    return Engine(max_epochs=1, default_root_dir=tmp_path, logger=False, enable_progress_bar=False)


def test_corrupt_image_is_named_before_training(tmp_path):
    root = write_digits_folder(tmp_path / "data", num_train=8, num_test=4)
    corrupt = root / "test" / "bad" / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    model = _tiny_firm()
    with pytest.raises(ValueError, match="corrupt.png"):
        _engine(tmp_path).fit(model, datamodule=_folder(root))
    assert model.global_step == 0  # nothing trained
    assert corrupt.exists()  # and nothing deleted


def test_empty_normal_folder(tmp_path):
    root = write_digits_folder(tmp_path / "data", num_train=8, num_test=4)
    shutil.rmtree(root / "train" / "good")
    (root / "train" / "good").mkdir()
    with pytest.raises((ValueError, FileNotFoundError, RuntimeError), match="(?i)found|empty|no "):
        _engine(tmp_path).fit(_tiny_firm(), datamodule=_folder(root))


def test_fewer_normal_images_than_neighbours(tmp_path):
    root = write_digits_folder(tmp_path / "data", num_train=3, num_test=4)
    model = _tiny_firm(num_neighbors=5)
    with pytest.raises(ValueError, match="at least 5 normal training images"):
        _engine(tmp_path).fit(model, datamodule=_folder(root))
    assert model.global_step == 0


def test_nan_loss_stops_with_advice(tmp_path):
    root = write_digits_folder(tmp_path / "data", num_train=8, num_test=4)

    class NanFirm(Firm):
        def compute_loss(self, batch):
            return super().compute_loss(batch) * torch.tensor(float("nan"))

    model = NanFirm(image_size=16, head_hidden_dim=32, head_layers=2, visualizer=False)
    with pytest.raises(TrainingDivergedError, match="learning rate"):  # a FloatingPointError
        _engine(tmp_path).fit(model, datamodule=_folder(root))


def test_scoring_an_untrained_model_without_data_is_an_error():
    model = _tiny_firm().eval()
    with pytest.raises(RuntimeError, match="empty"):
        model.model(torch.rand(2, 3, 16, 16))


def test_bad_settings():
    with pytest.raises(ValueError, match="score"):
        Firm(score="median")
    with pytest.raises(ValueError, match="layout"):
        Firm(loss_layout="diagonal")


def test_loader_workers_are_capped_at_the_usable_cores(monkeypatch):
    from types import SimpleNamespace

    from anomalib_firm.models.components.lifecycle import training_data

    monkeypatch.setattr(training_data, "usable_cores", lambda: 2)
    datamodule = SimpleNamespace(num_workers=8)
    training_data.cap_loader_workers(datamodule)
    assert datamodule.num_workers == 2
    training_data.cap_loader_workers(datamodule := SimpleNamespace(num_workers=0))
    assert datamodule.num_workers == 0  # fewer than the cores: as asked
    training_data.cap_loader_workers(None)  # no data module (scripts): nothing to do
