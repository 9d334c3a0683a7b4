"""CIFAR-10 and CIFAR-100 one-vs-rest data modules, read from the standard python pickle batches.

The standard one-class protocol: one class is normal, its 5,000 (CIFAR-10) or 2,500
(CIFAR-100 super-class) training images train the model, and the whole test set (10,000
images) is the test split, images of the normal class labelled ``0`` and every other
``1``. CIFAR-100 uses its 20 coarse super-classes (``coarse_labels`` of the pickles).

Expected layout (what ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz`` unpack to)::

    root/
    ├── cifar-10-batches-py/      data_batch_1 ... data_batch_5, test_batch, batches.meta
    └── cifar-100-python/         train, test, meta

``root`` may also be the ``cifar-10-batches-py`` / ``cifar-100-python`` folder itself.
With ``download=True`` the archive is downloaded and unpacked into ``root`` when missing.

Example:
    >>> from anomalib_firm.data import CIFAR10
    >>> datamodule = CIFAR10(root="./datasets", category="cat")
    >>> datamodule.setup()
    >>> len(datamodule.train_data), datamodule.category
    (5000, 'cat')
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.datasets.utils import download_and_extract_archive

from anomalib_firm.console import InputError, MissingInputError
from anomalib_firm.data.dataset import SplitArrays
from anomalib_firm.data.downloadable import DownloadableDataModule

logger = logging.getLogger(__name__)

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR100_SUPERCLASSES = [
    "aquatic_mammals",
    "fish",
    "flowers",
    "food_containers",
    "fruit_and_vegetables",
    "household_electrical_devices",
    "household_furniture",
    "insects",
    "large_carnivores",
    "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores",
    "medium_mammals",
    "non-insect_invertebrates",
    "people",
    "reptiles",
    "small_mammals",
    "trees",
    "vehicles_1",
    "vehicles_2",
]


def read_cifar_pickle(path: Path) -> dict[str, Any]:
    """Read one CIFAR python pickle batch, with ``str`` keys whatever the pickle used.

    Args:
        path (Path): A batch file (``data_batch_1``, ``test_batch``, ``train``, ``test``...).

    Returns:
        dict[str, Any]: The batch; ``bytes`` keys (the real files) are decoded to ``str``.

    Raises:
        ValueError: If the file is not a readable CIFAR pickle.
    """
    try:
        with path.open("rb") as file:
            batch = pickle.load(file, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
        msg = f"Cannot read CIFAR batch file '{path}': {error}"
        raise InputError(msg) from error
    if not isinstance(batch, dict):
        msg = f"CIFAR batch file '{path}' does not hold a dict (found {type(batch).__name__})."
        raise InputError(msg)
    return {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in batch.items()}


def _batch_arrays(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 3, 32, 32)`` and labels ``(N,)`` of one pickle batch."""
    batch = read_cifar_pickle(path)
    if "data" not in batch or label_key not in batch:
        msg = f"CIFAR batch file '{path}' lacks the key 'data' or {label_key!r} (found {sorted(batch)})."
        raise InputError(msg)
    data = np.asarray(batch["data"], dtype=np.uint8)
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        msg = f"CIFAR batch file '{path}' has data of shape {data.shape} for {len(labels)} labels; expected (N, 3072)."
        raise InputError(msg)
    # Rows hold the red, green and blue 32x32 planes in turn: already channel-first.
    return data.reshape(-1, 3, 32, 32), labels


class _CIFAR(DownloadableDataModule):
    """Shared loading of CIFAR-10 and CIFAR-100 (see the subclasses)."""

    folder: str
    archive: str
    url: str
    md5: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str

    @property
    def _expected(self) -> tuple[str, ...]:
        return (*self.train_files, *self.test_files)

    def _find_folder(self) -> Path | None:
        """Folder holding all batch files: ``root/<folder>`` or ``root`` itself."""
        for folder in (self.root / self.folder, self.root):
            if all((folder / name).is_file() for name in self._expected):
                return folder
        return None

    def _locate(self) -> Path:
        """Find the batch files, downloading them first when allowed and missing."""
        folder = self._find_folder()
        if folder is None and self.download:
            logger.info("Downloading %s into %s", self.url, self.root)
            download_and_extract_archive(self.url, download_root=str(self.root), filename=self.archive, md5=self.md5)
            folder = self._find_folder()
        if folder is None:
            msg = (
                f"{self.name} files not found: expected {', '.join(self._expected)} in '{self.root / self.folder}' "
                f"(or directly in '{self.root}'). Pass download=True to download {self.archive} from {self.url} "
                f"into '{self.root}', or point root at a folder holding these files."
            )
            raise MissingInputError(msg)
        return folder

    def _read_split(self, split: str) -> SplitArrays:
        files = self.train_files if split == "train" else self.test_files
        folder = self._locate()
        parts = [_batch_arrays(folder / name, self.label_key) for name in files]
        images = np.concatenate([images for images, _ in parts]) if len(parts) > 1 else parts[0][0]
        labels = np.concatenate([labels for _, labels in parts])
        if labels.min(initial=0) < 0 or labels.max(initial=0) >= len(self.class_names):
            msg = f"{self.name} labels in {files} fall outside 0..{len(self.class_names) - 1}."
            raise InputError(msg)
        return SplitArrays(images=torch.from_numpy(np.ascontiguousarray(images)), class_index=torch.from_numpy(labels))


class CIFAR10(_CIFAR):
    """CIFAR-10 one-vs-rest: one (or several) of the 10 classes is normal.

    Classes: ``airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck``. The
    arguments not listed here are :class:`~anomalib_firm.data.base.OneVsRestDataModule`'s.

    Args:
        root (str | Path): Folder holding ``cifar-10-batches-py/`` (or that folder itself).
            Defaults to ``"./datasets"``.
        category (int | str | list[int | str]): Normal class(es): name or index, a list, or
            names joined with ``"+"``. Defaults to ``0`` (``airplane``).
        download (bool): Download ``cifar-10-python.tar.gz`` when missing. Defaults to ``False``.

    Example:
        >>> datamodule = CIFAR10(root="./datasets", category=["cat", "dog"])
        >>> datamodule.normal_classes, datamodule.category
        (['cat', 'dog'], 'cat+dog')
    """

    folder = "cifar-10-batches-py"
    archive = "cifar-10-python.tar.gz"
    url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    md5 = "c58f30108f718f92721af3b95e74349a"
    train_files = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5")
    test_files = ("test_batch",)
    label_key = "labels"

    @property
    def class_names(self) -> list[str]:
        """The 10 CIFAR-10 class names."""
        return list(CIFAR10_CLASSES)


class CIFAR100(_CIFAR):
    """CIFAR-100 one-vs-rest over its 20 coarse super-classes (the standard one-class protocol).

    Labels are the ``coarse_labels`` of the pickles; classes are ``aquatic_mammals, fish,
    flowers, food_containers, fruit_and_vegetables, household_electrical_devices,
    household_furniture, insects, large_carnivores, large_man-made_outdoor_things,
    large_natural_outdoor_scenes, large_omnivores_and_herbivores, medium_mammals,
    non-insect_invertebrates, people, reptiles, small_mammals, trees, vehicles_1, vehicles_2``.
    The arguments not listed here are :class:`~anomalib_firm.data.base.OneVsRestDataModule`'s.

    Args:
        root (str | Path): Folder holding ``cifar-100-python/`` (or that folder itself).
            Defaults to ``"./datasets"``.
        category (int | str | list[int | str]): Normal super-class(es): name or index, a
            list, or names joined with ``"+"``. Defaults to ``0`` (``aquatic_mammals``).
        download (bool): Download ``cifar-100-python.tar.gz`` when missing. Defaults to ``False``.

    Example:
        >>> datamodule = CIFAR100(root="./datasets", category="fish")
        >>> datamodule.setup()
        >>> len(datamodule.train_data)
        2500
    """

    folder = "cifar-100-python"
    archive = "cifar-100-python.tar.gz"
    url = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    md5 = "eb9058c3a382ffc7106e4002c42a8d85"
    train_files = ("train",)
    test_files = ("test",)
    label_key = "coarse_labels"

    @property
    def class_names(self) -> list[str]:
        """The 20 CIFAR-100 super-class names."""
        return list(CIFAR100_SUPERCLASSES)
