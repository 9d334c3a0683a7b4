"""scikit-learn's bundled handwritten digits as a one-vs-rest data module (no file to get).

``sklearn.datasets.load_digits()`` ships 1,797 grey 8x8 images with 17 grey levels
(0..16) of the digits 0..9. They are split once, per class, into halves by a fixed seed
(896 training and 901 test images, identical at every run and for every category), and
the grey levels are scaled to ``uint8`` 0..255. The smallest real data set: meant for
quick starts and fast tests. :func:`write_digits_folder` writes the same images as an anomalib
``Folder`` tree (PNG files), for the stock file-based data modules.

Example:
    >>> from anomalib_firm.data import Digits
    >>> datamodule = Digits(category=3)
    >>> datamodule.setup()
    >>> len(datamodule.train_data)
    91
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from anomalib_firm.data.base import OneVsRestDataModule
from anomalib_firm.data.dataset import SplitArrays

logger = logging.getLogger(__name__)

#: Seed of the fixed train/test split (independent of the ``seed`` argument, which seeds validation).
SPLIT_SEED = 0
DIGITS_CLASSES = [str(digit) for digit in range(10)]


def load_digit_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: ``uint8`` images ``(1797, 8, 8)`` (grey levels 0..16 scaled to 0..255) and labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return images, digits.target.astype(np.int64)


def split_digits(labels: np.ndarray, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Stratified 50/50 split: each class's images shuffled by ``seed``, the first half to train.

    Args:
        labels (np.ndarray): Class of each image, shape ``(N,)``.
        seed (int): Seed of the shuffle.

    Returns:
        tuple[np.ndarray, np.ndarray]: Sorted positions of the training and of the test images
        (a class with an odd count gives its extra image to the test split).
    """
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        positions = rng.permutation(np.flatnonzero(labels == label))
        train.append(positions[: len(positions) // 2])
        test.append(positions[len(positions) // 2 :])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


class Digits(OneVsRestDataModule):
    """scikit-learn digits one-vs-rest: one (or several) of the digits ``"0"`` ... ``"9"`` is normal.

    The arguments are :class:`~anomalib_firm.data.base.OneVsRestDataModule`'s; two mean here:

    Args:
        category (int | str | list[int | str]): Normal digit(s). Defaults to ``0``.
        seed (int | None): Seeds the validation split (the train/test split is fixed by
            :data:`SPLIT_SEED`). Defaults to ``0``.

    Example:
        >>> datamodule = Digits(category="7", train_batch_size=32)
        >>> datamodule.setup()
        >>> batch = next(iter(datamodule.train_dataloader()))
        >>> batch.image.shape  # grey 8x8, three channels in the batch
        torch.Size([32, 3, 8, 8])
    """

    @property
    def class_names(self) -> list[str]:
        """The digits ``"0"`` ... ``"9"``."""
        return list(DIGITS_CLASSES)

    def _read_split(self, split: str) -> SplitArrays:
        images, labels = load_digit_images()
        train, test = split_digits(labels)
        positions = train if split == "train" else test
        return SplitArrays(
            images=torch.from_numpy(images[positions, None]), class_index=torch.from_numpy(labels[positions])
        )


def write_digits_folder(
    root: Path | str,
    digit: int = 0,
    size: int = 32,
    num_train: int | None = None,
    num_test: int | None = None,
    anomalies_per_normal: int = 2,
    seed: int = 0,
) -> dict[str, int]:
    """Write one digit as a one-vs-rest anomalib ``Folder`` tree under ``root``; return the images per folder.

    ``train/good`` holds the digit's training images and ``test/good`` its test images (the
    :class:`Digits` split, so the same images as ``Digits(category=digit)``); ``test/bad`` a seeded
    draw of ``anomalies_per_normal`` times as many test images of the other digits. Grey PNGs,
    upscaled 8x8 -> ``size`` with nearest neighbour, named ``<position>_digit<label>.png``
    (position in scikit-learn's set). The tree is the same at every run.

    Args:
        root: Folder to write (created).
        digit: The normal digit.
        size: Side of the written images in pixels.
        num_train: Keep the first this many training images (``None``: all, about 90).
        num_test: Keep the first this many normal test images (``None``: all, about 90).
        anomalies_per_normal: Anomalous test images per normal test image (fewer if the set runs out).
        seed: Seed of the anomalous draw.

    Example:
        >>> write_digits_folder("digits5", digit=5)  # doctest: +SKIP
        {'train/good': 91, 'test/good': 91, 'test/bad': 182}
    """
    from PIL import Image

    images, labels = load_digit_images()
    train, test = split_digits(labels)
    normal_test = test[labels[test] == digit][:num_test]
    other_test = test[labels[test] != digit]
    count = min(len(other_test), anomalies_per_normal * len(normal_test))
    folders = {
        "train/good": train[labels[train] == digit][:num_train],
        "test/good": normal_test,
        "test/bad": np.sort(np.random.default_rng(seed).choice(other_test, size=count, replace=False)),
    }
    for folder, positions in folders.items():
        directory = Path(root) / folder
        directory.mkdir(parents=True, exist_ok=True)
        for position in positions:
            image = Image.fromarray(images[position]).resize((size, size), Image.Resampling.NEAREST)
            image.save(directory / f"{position:04d}_digit{labels[position]}.png")
    return {folder: len(positions) for folder, positions in folders.items()}
