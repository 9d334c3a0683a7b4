"""Checks of the training data before the first step, so that a bad set fails at once, not hours later.

- :func:`check_enough_images`: the scorer needs a minimum of normal training images (k of a k-NN);
- :func:`verify_image_files`: every image file of the splits opens (data sets read from files);
- :func:`cap_loader_workers`: no more loader worker processes than the cores this process may use.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

from anomalib_firm.console import InputError

logger = logging.getLogger(__name__)


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the platform has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cap_loader_workers(datamodule: Any) -> None:
    """Lower a data module's ``num_workers`` to the usable cores (anomalib's ``Folder`` asks for 8 by default).

    More worker processes than cores only compete for them, and PyTorch warns about it at every loader.
    """
    requested = getattr(datamodule, "num_workers", None)
    cores = usable_cores()
    if isinstance(requested, int) and requested > cores:
        datamodule.num_workers = cores
        logger.info("Loading data with %d worker processes (num_workers %d > %d cores).", cores, requested, cores)


def check_enough_images(datamodule: Any, minimum: int, model_name: str) -> None:
    """Raise when the data module's training set holds fewer than ``minimum`` images (nothing set up: no check).

    Raises:
        ValueError: naming the model, the minimum and the training set's size.
    """
    train_data = getattr(datamodule, "train_data", None)
    if train_data is None:
        return
    num_images = len(train_data)
    if num_images < minimum:
        msg = (
            f"{model_name} needs at least {minimum} normal training images "
            f"(see num_neighbors / the data module's category), but the training set has {num_images}."
        )
        raise InputError(msg)


def verify_image_files(datamodule: Any, verified: set[int] | None = None) -> None:
    """Open every image file of the train/val/test splits once, before the model sees any.

    A corrupt or unreadable file would otherwise stop the run mid-way (or only at test time,
    after hours of training). Files with more than 8 bits per grey pixel (16-bit PNGs, say),
    which anomalib's image reader clips instead of scaling (a dark 16-bit image reaches the model
    white), are refused in one message naming them: the model never trains or tests on such a
    distorted image. Data sets held in memory (``holds_images_in_memory``: read by our own
    readers, which scale 16-bit images) are skipped.

    Args:
        datamodule: A set-up data module (its ``train_data``, ``val_data``, ``test_data``).
        verified: Hashes of the path lists of the splits checked before (skipped again: ``anomalib
            train`` sets the same data up for fit and for test); the splits checked now are added.

    Raises:
        InputError: naming the first unreadable file, or the files of more than 8 bits, and what to do.
    """
    from PIL import Image, UnidentifiedImageError

    from anomalib_firm.data.image_depth import high_depth_message, is_high_depth

    high_depth: dict[str, str] = {}  # path -> PIL mode
    for split in ("train_data", "val_data", "test_data"):
        dataset = getattr(datamodule, split, None)
        samples = getattr(dataset, "_samples", None)
        if samples is None or getattr(dataset, "holds_images_in_memory", False) or "image_path" not in samples:
            continue
        paths_hash = hash(tuple(str(path) for path in samples["image_path"]))
        if verified is not None and paths_hash in verified:
            continue
        for path in samples["image_path"]:
            try:
                with Image.open(path) as image:
                    if is_high_depth(image.mode):
                        high_depth[str(path)] = image.mode
                    image.verify()
            except (OSError, UnidentifiedImageError, SyntaxError) as error:
                msg = (
                    f"Cannot read image file {path!r} ({split.removesuffix('_data')} split): {error}. "
                    "Remove or replace the file, then start again."
                )
                raise InputError(msg) from error
        if verified is not None and not high_depth:
            verified.add(paths_hash)
    if high_depth:
        reader = f"{type(datamodule).__name__} (anomalib's read_image)"
        raise InputError(high_depth_message(list(high_depth.items()), reader))


def batch_images(batch: Any) -> torch.Tensor:
    """A batch's images ``(B, 3, H, W)``; a batch without images (a data module's bug) is named plainly."""
    images = batch.image
    if images is None:
        msg = f"A {type(batch).__name__} without images reached the model: the data module must give images."
        raise ValueError(msg)
    return images
