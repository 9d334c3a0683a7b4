"""Every ``configs/benchmark`` file builds its model and data module with our signatures."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from anomalib.data import get_datamodule
from anomalib.models import get_model

CONFIGS = sorted((Path(__file__).parent.parent / "configs" / "benchmark").glob("*.yaml"))


def _first_of_grids(init_args: dict) -> dict:
    return {
        key: value["grid"][0] if isinstance(value, dict) and "grid" in value else value
        for key, value in init_args.items()
    }


@pytest.mark.parametrize("path", CONFIGS, ids=[path.stem for path in CONFIGS])
def test_benchmark_config_builds(path):
    config = yaml.safe_load(path.read_text())["benchmark"]
    model_args = _first_of_grids(config["model"]["init_args"])
    model = get_model({"class_path": config["model"]["class_path"], "init_args": model_args})
    assert model.trainer_arguments["max_epochs"] == model_args["max_epochs"]
    assert model.trainer_arguments["check_val_every_n_epoch"] == model_args["max_epochs"]  # last epoch only
    data_args = _first_of_grids(config["data"]["init_args"])
    datamodule = get_datamodule({"class_path": config["data"]["class_path"], "init_args": data_args})
    assert datamodule.train_batch_size == data_args["train_batch_size"]
