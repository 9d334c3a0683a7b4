"""Small models and batches shared by the tests that step FIRM, MCL and MSC directly (no data module)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from anomalib.engine import Engine

from anomalib_firm.data.batch import OneVsRestImageBatch
from anomalib_firm.models import Firm, Mcl, Msc
from anomalib_firm.registry import model_names

#: Image side of the small test models.
IMAGE_SIZE = 16
MODEL_NAMES = model_names()  # every registered model


def random_training_batch(count: int, seed: int, image_size: int = IMAGE_SIZE) -> OneVsRestImageBatch:
    """``count`` seeded random images in [0, 1], all normal and of class 0, as a training batch."""
    generator = torch.Generator().manual_seed(seed)
    return OneVsRestImageBatch(
        image=torch.rand(count, 3, image_size, image_size, generator=generator),
        gt_label=torch.zeros(count, dtype=torch.long),
        class_label=torch.zeros(count, dtype=torch.long),
        image_path=[f"x/{index}.png" for index in range(count)],
    )


def tiny_model(name: str, *, with_center: bool = False, **kwargs: Any) -> Firm | Mcl | Msc:
    """A CPU-sized FIRM, MCL or MSC at :data:`IMAGE_SIZE` px (``kwargs`` override the defaults below).

    FIRM: 2-layer head of width 64; MCL: ResNet-18 CIFAR stem, head width 64; MSC: torchvision
    ResNet-18 with random weights (no download). ``with_center`` gives MSC a fixed unit centre, so
    it can step without a Trainer computing one.
    """
    arguments: dict[str, Any] = {"image_size": IMAGE_SIZE, "visualizer": False}
    if name == "firm":
        return Firm(**{**arguments, "head_hidden_dim": 64, "head_layers": 2, **kwargs})
    if name == "mcl":
        return Mcl(**{**arguments, "backbone": "resnet18_cifar", "head_hidden_dim": 64, **kwargs})
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*MSC needs ImageNet pretraining")
        model = Msc(**{**arguments, "backbone": "resnet18", "weights": "random", **kwargs})
        model.load_pretrained_weights()  # random: nothing to load (it would warn when training starts)
    if with_center:
        model.model.set_center(torch.nn.functional.normalize(torch.ones(model.model.feature_dim), dim=0))
    return model


def short_fit_engine(root: Path, train_batches: int) -> Engine:
    """anomalib's Engine for a quiet one-epoch fit of ``train_batches`` steps, without validation."""
    return Engine(
        max_epochs=1,
        limit_train_batches=train_batches,
        limit_val_batches=0,
        default_root_dir=root,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
