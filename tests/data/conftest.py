"""Writers of small data sets in the real on-disk formats (CIFAR pickles, idx files, PNG trees).

Every image carries markers so that tests can tell which image arrived where:
pixel ``[0, 0, 0]`` (channel, row, column) is ``12 * class`` and pixel ``[0, 0, 1]`` is the
image's position in its split (mod 256).
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from anomalib_firm.data.cifar import CIFAR10_CLASSES, CIFAR100_SUPERCLASSES

CLASS_MARK = 12


def fake_images(labels: np.ndarray, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Random uint8 images of ``shape`` (per image) with the class and position markers."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (len(labels), *shape), dtype=np.uint8)
    flat = images.reshape(len(labels), -1)
    flat[:, 0] = labels * CLASS_MARK
    flat[:, 1] = np.arange(len(labels)) % 256
    return images


def class_of(images: np.ndarray) -> np.ndarray:
    """Read the class marker back from uint8 images of any layout."""
    return images.reshape(len(images), -1)[:, 0] // CLASS_MARK


def _dump(path: Path, obj: dict) -> None:
    with path.open("wb") as file:
        pickle.dump(obj, file, protocol=2)


def write_cifar10(root: Path, train_per_class: int = 6, test_per_class: int = 5) -> dict[str, np.ndarray]:
    """Write ``root/cifar-10-batches-py`` (5 train batches, test batch, meta) with bytes keys like the real files."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_labels = np.tile(np.arange(10), train_per_class)
    test_labels = np.tile(np.arange(10), test_per_class)
    train_images = fake_images(train_labels, (3, 32, 32), seed=1)
    test_images = fake_images(test_labels, (3, 32, 32), seed=2)
    for number, part in enumerate(np.array_split(np.arange(len(train_labels)), 5), start=1):
        _dump(
            folder / f"data_batch_{number}",
            {
                b"batch_label": f"training batch {number} of 5".encode(),
                b"labels": train_labels[part].tolist(),
                b"data": train_images[part].reshape(len(part), -1),
                b"filenames": [f"{i}.png".encode() for i in part],
            },
        )
    _dump(
        folder / "test_batch",
        {
            b"batch_label": b"testing batch 1 of 1",
            b"labels": test_labels.tolist(),
            b"data": test_images.reshape(len(test_labels), -1),
        },
    )
    _dump(folder / "batches.meta", {b"label_names": [name.encode() for name in CIFAR10_CLASSES], b"num_vis": 3072})
    return {
        "train_images": train_images,
        "train_labels": train_labels,
        "test_images": test_images,
        "test_labels": test_labels,
    }


def write_cifar100(root: Path, train_per_class: int = 3, test_per_class: int = 2) -> dict[str, np.ndarray]:
    """Write ``root/cifar-100-python`` (train, test, meta) with fine and coarse labels."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    arrays = {}
    for split, per_class, seed in (("train", train_per_class, 3), ("test", test_per_class, 4)):
        coarse = np.tile(np.arange(20), per_class)
        fine = coarse * 5 + np.arange(len(coarse)) % 5
        images = fake_images(coarse, (3, 32, 32), seed=seed)
        _dump(
            folder / split,
            {
                b"filenames": [f"{i}.png".encode() for i in range(len(coarse))],
                b"fine_labels": fine.tolist(),
                b"coarse_labels": coarse.tolist(),
                b"data": images.reshape(len(coarse), -1),
            },
        )
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, coarse
    _dump(
        folder / "meta",
        {
            b"fine_label_names": [f"fine_{i}".encode() for i in range(100)],
            b"coarse_label_names": [name.encode() for name in CIFAR100_SUPERCLASSES],
        },
    )
    return arrays


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write an idx file of unsigned bytes, gzipped when ``path`` ends with ``.gz``."""
    data = (
        bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def write_mnist(
    folder: Path, train_per_class: int = 5, test_per_class: int = 4, gz: bool = True
) -> dict[str, np.ndarray]:
    """Write the four MNIST-style idx files into ``folder``."""
    suffix = ".gz" if gz else ""
    arrays = {}
    for split, prefix, per_class, seed in (("train", "train", train_per_class, 5), ("test", "t10k", test_per_class, 6)):
        labels = np.tile(np.arange(10), per_class).astype(np.uint8)
        images = fake_images(labels, (28, 28), seed=seed)
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels.astype(np.int64)
    return arrays


def write_png(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    """Save an image array as PNG (``mode`` converts it first, e.g. ``"L"``, ``"P"``, ``"RGBA"``)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if mode == "P":
        image = image.convert("P", palette=Image.Palette.ADAPTIVE)
        image.info["transparency"] = 0
    elif mode is not None:
        image = image.convert(mode)
    image.save(path)


def write_class_tree(folder: Path, per_class: dict[str, int], size: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """Write ``folder/<class>/<i>.png`` RGB images; returns each class's images ``(n, size, size, 3)``."""
    rng = np.random.default_rng(seed)
    written = {}
    for class_name, count in per_class.items():
        images = rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
        for index, image in enumerate(images):
            write_png(folder / class_name / f"{index:03d}.png", image)
        written[class_name] = images
    return written


@pytest.fixture
def writers() -> SimpleNamespace:
    """The writers and marker helpers of this module, for tests to call."""
    return SimpleNamespace(
        fake_images=fake_images,
        class_of=class_of,
        write_cifar10=write_cifar10,
        write_cifar100=write_cifar100,
        write_idx=write_idx,
        write_mnist=write_mnist,
        write_png=write_png,
        write_class_tree=write_class_tree,
    )


@pytest.fixture
def cifar10_root(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path / "data"
    return root, write_cifar10(root)


@pytest.fixture
def cifar100_root(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path / "data"
    return root, write_cifar100(root)
