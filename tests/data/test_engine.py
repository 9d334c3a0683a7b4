"""The data modules inside anomalib's own machinery: config files and a real Engine fit + test."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from anomalib import LearningType
from anomalib.data import AnomalibDataModule
from anomalib.data.dataclasses.torch.base import InferenceBatch
from anomalib.engine import Engine
from anomalib.models.components.base import AnomalibModule
from anomalib.pre_processing import PreProcessor
from torchvision.transforms.v2 import Resize

from anomalib_firm.data import CIFAR10, CIFAR100, MNIST, ClassFolder, Digits, FashionMNIST
from anomalib_firm.data.batch import OneVsRestImageBatch
from anomalib_firm.data.visualization import InMemoryImageVisualizer

CONFIGS = Path(__file__).parents[2] / "configs" / "data"


class _MeanDistance(torch.nn.Module):
    """Score = squared distance of the image to a learned mean image."""

    def __init__(self) -> None:
        super().__init__()
        self.mean = torch.nn.Parameter(torch.zeros(3, 16, 16))

    def forward(self, images: torch.Tensor) -> InferenceBatch:
        return InferenceBatch(pred_score=((images - self.mean) ** 2).mean(dim=(1, 2, 3)))


class _Recorder(AnomalibModule):
    """Tiny model that records what reaches ``training_step``."""

    def __init__(self) -> None:
        # In-memory images: anomalib's own ImageVisualizer would open their pseudo paths as files.
        super().__init__(pre_processor=PreProcessor(transform=Resize((16, 16))), visualizer=InMemoryImageVisualizer())
        self.model = _MeanDistance()
        self.seen: list[tuple] = []

    def training_step(self, batch, batch_idx):
        del batch_idx
        self.seen.append(
            (
                type(batch),
                batch.class_label.clone().cpu(),
                batch.class_label.device,
                batch.image.shape,
                self.device,
            )
        )
        return {"loss": self.model(batch.image).pred_score.mean()}

    def validation_step(self, batch, batch_idx):
        del batch_idx
        return batch.update(**self.model(batch.image)._asdict())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    @property
    def trainer_arguments(self) -> dict:
        return {}

    @property
    def learning_type(self) -> LearningType:
        return LearningType.ONE_CLASS


ACCELERATORS = ["cpu", *(["gpu"] if torch.cuda.is_available() else [])]


@pytest.mark.parametrize("accelerator", ACCELERATORS)
def test_engine_fit_and_test(tmp_path, accelerator):
    # a small test split (most of the test set goes to validation) keeps the visualizer quick
    datamodule = Digits(category=[5, 3], eval_batch_size=32, val_split_ratio=0.9)
    model = _Recorder()
    engine = Engine(
        default_root_dir=tmp_path,
        accelerator=accelerator,
        devices=1,
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
    )
    engine.fit(model=model, datamodule=datamodule)
    assert model.seen
    labels = torch.cat([seen[1] for seen in model.seen])
    assert sorted(set(labels.tolist())) == [0, 1]
    assert len(labels) == len(datamodule.train_data)
    for batch_type, _, label_device, image_shape, model_device in model.seen:
        assert batch_type is OneVsRestImageBatch
        assert label_device == model_device
        assert image_shape[1:] == (3, 16, 16)  # the model's Resize ran on the batch in the dataset

    results = engine.test(model=model, datamodule=datamodule)
    assert 0.0 <= results[0]["image_AUROC"] <= 1.0
    test_labels = datamodule.test_data.samples.label_index
    assert set(test_labels) == {0, 1}
    run_dir = tmp_path / "_Recorder" / "Digits" / "3+5"
    assert run_dir.is_dir()
    images = list(run_dir.rglob("*.png"))
    assert len(images) == len(test_labels)  # the visualizer saved each tested item


def test_our_models_draw_in_memory_images_by_default():
    from anomalib_firm import models
    from anomalib_firm.registry import MODELS

    for name in MODELS:
        assert type(getattr(models, name).configure_visualizer()) is InMemoryImageVisualizer


def _config_overrides(name: str, tmp_path: Path) -> dict[str, str]:
    if name == "class_folder":
        for class_name in ("a", "b"):
            (tmp_path / class_name).mkdir()
        return {"data.root": str(tmp_path)}
    return {}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cifar10", CIFAR10),
        ("cifar100", CIFAR100),
        ("fashion_mnist", FashionMNIST),
        ("mnist", MNIST),
        ("digits", Digits),
        ("class_folder", ClassFolder),
    ],
)
def test_example_configs_instantiate(tmp_path, name, expected):
    overrides = _config_overrides(name, tmp_path)
    datamodule = AnomalibDataModule.from_config(CONFIGS / f"{name}.yaml", **overrides)
    assert type(datamodule) is expected
    assert datamodule.category == datamodule.class_names[0]
    assert datamodule.train_batch_size == 64


def test_config_category_list(tmp_path):
    datamodule = AnomalibDataModule.from_config(CONFIGS / "digits.yaml", **{"data.category": "[7, 1]"})
    assert datamodule.category == "1+7"
