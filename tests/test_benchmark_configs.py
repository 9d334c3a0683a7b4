"""Every file under ``configs/`` starts as the stock command starts it (on the CPU, nothing run).

Benchmark configs go through anomalib's benchmark pipeline (its accelerator check, then its job
generator building the first job's model and data module); model and data configs through
``anomalib train``'s parser and class instantiation (``AnomalibCLI(..., run=False)``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from anomalib.data import get_datamodule
from anomalib.models import get_model

CONFIG_ROOT = Path(__file__).parent.parent / "configs"
CONFIGS = sorted((CONFIG_ROOT / "benchmark").glob("*.yaml"))
MODEL_CONFIGS = sorted((CONFIG_ROOT / "models").glob("*.yaml"))
DATA_CONFIGS = sorted((CONFIG_ROOT / "data").glob("*.yaml"))


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


@pytest.mark.parametrize("path", CONFIGS, ids=[path.stem for path in CONFIGS])
def test_benchmark_config_passes_the_benchmark_pipeline(path):
    from anomalib.pipelines import Benchmark

    config = yaml.safe_load(path.read_text())
    (runner,) = Benchmark._setup_runners(config)  # the accelerator check ('cpu' or 'cuda', before any hardware)
    job = next(iter(runner.generator.generate_jobs(config["benchmark"], None)))
    assert type(job.model).__name__ == config["benchmark"]["model"]["class_path"]


def _instantiated(args: list[str]):
    from anomalib.cli import AnomalibCLI

    cli = AnomalibCLI(args=["train", *args, "--trainer.accelerator", "cpu"], run=False)
    return cli.model, cli.datamodule


@pytest.mark.parametrize("path", MODEL_CONFIGS, ids=[path.stem for path in MODEL_CONFIGS])
def test_model_config_starts_through_the_cli(path):
    model, datamodule = _instantiated(["--config", str(path), "--data", str(CONFIG_ROOT / "data" / "digits.yaml")])
    assert type(model).__module__.startswith("anomalib_firm.models")
    assert type(datamodule).__name__ == "Digits"


@pytest.mark.parametrize("path", DATA_CONFIGS, ids=[path.stem for path in DATA_CONFIGS])
def test_data_config_starts_through_the_cli(path, tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.chdir(tmp_path)  # class_folder.yaml names ./datasets/my_classes: a small tree there
    for name in ("a", "b"):
        (tmp_path / "datasets" / "my_classes" / name).mkdir(parents=True)
        for index in range(3):
            Image.new("L", (8, 8), 40 * index).save(tmp_path / "datasets" / "my_classes" / name / f"{index}.png")
    model, datamodule = _instantiated(["--model", "FIRM", "--data", str(path)])
    assert type(datamodule).__name__ == yaml.safe_load(path.read_text())["class_path"].rsplit(".", 1)[-1]
    assert type(model).__name__ == "FIRM"
