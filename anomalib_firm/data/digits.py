"""scikit-learn's bundled handwritten digits as a one-vs-rest data module (no file to get).

``sklearn.datasets.load_digits()`` ships 1,797 grey 8x8 images with 17 grey levels
(0..16) of the digits 0..9. They are split once, per class, into halves by a fixed seed
(896 training and 901 test images, identical at every run and for every category), and
the grey levels are scaled to ``uint8`` 0..255. The smallest real data set: meant for
quick starts and fast tests.

Example:
    >>> from anomalib_firm.data import Digits
    >>> datamodule = Digits(category=3)
    >>> datamodule.setup()
    >>> len(datamodule.train_data)
    91
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import torch

from anomalib_firm.data.base import OneVsRestDataModule, SplitArrays

if TYPE_CHECKING:
    from torchvision.transforms.v2 import Transform

logger = logging.getLogger(__name__)

#: Seed of the fixed train/test split (independent of the ``seed`` argument, which seeds validation).
SPLIT_SEED = 0
DIGITS_CLASSES = [str(digit) for digit in range(10)]


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

    Args:
        category (int | str | list[int | str]): Normal digit(s). Defaults to ``0``.
        train_batch_size (int): Defaults to ``64``.
        eval_batch_size (int): Defaults to ``256``.
        num_workers (int): Defaults to ``0``.
        train_augmentations (Transform | None): Defaults to ``None``.
        val_augmentations (Transform | None): Defaults to ``None``.
        test_augmentations (Transform | None): Defaults to ``None``.
        augmentations (Transform | None): Defaults to ``None``.
        val_split_mode (str): Defaults to ``"from_test"``.
        val_split_ratio (float): Defaults to ``0.2``.
        test_split_mode (str): Defaults to ``"none"`` (whole test split).
        seed (int | None): Seeds the validation split. Defaults to ``0``.
        max_train_images (int | None): Seeded random subset of the training images (``None``: all).
        max_test_images (int | None): Seeded stratified subset of the test images (``None``: all).

    Example:
        >>> datamodule = Digits(category="7", train_batch_size=32)
        >>> datamodule.setup()
        >>> batch = next(iter(datamodule.train_dataloader()))
        >>> batch.image.shape  # grey 8x8, three channels in the batch
        torch.Size([32, 3, 8, 8])
    """

    def __init__(
        self,
        category: int | str | list[int | str] = 0,
        train_batch_size: int = 64,
        eval_batch_size: int = 256,
        num_workers: int = 0,
        train_augmentations: Transform | None = None,
        val_augmentations: Transform | None = None,
        test_augmentations: Transform | None = None,
        augmentations: Transform | None = None,
        val_split_mode: str = "from_test",
        val_split_ratio: float = 0.2,
        test_split_mode: str = "none",
        seed: int | None = 0,
        max_train_images: int | None = None,
        max_test_images: int | None = None,
    ) -> None:
        super().__init__(
            category=category,
            train_batch_size=train_batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            train_augmentations=train_augmentations,
            val_augmentations=val_augmentations,
            test_augmentations=test_augmentations,
            augmentations=augmentations,
            val_split_mode=val_split_mode,
            val_split_ratio=val_split_ratio,
            test_split_mode=test_split_mode,
            seed=seed,
            max_train_images=max_train_images,
            max_test_images=max_test_images,
        )

    @property
    def class_names(self) -> list[str]:
        """The digits ``"0"`` ... ``"9"``."""
        return list(DIGITS_CLASSES)

    @staticmethod
    def _read(split: str) -> SplitArrays:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = np.rint(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[:, None]
        labels = digits.target.astype(np.int64)
        train, test = split_digits(labels)
        positions = train if split == "train" else test
        return SplitArrays(images=torch.from_numpy(images[positions]), class_index=torch.from_numpy(labels[positions]))

    def _load_train(self, class_indices: list[int]) -> SplitArrays:
        return self._read("train").select(class_indices)

    def _load_test(self) -> SplitArrays:
        return self._read("test")
