"""MNIST and Fashion-MNIST one-vs-rest data modules, read from the standard idx files.

One class is normal: its 6,000 training images train the model and the whole 10,000-image
test set is the test split (normal class ``0``, every other class ``1``). Images are
28x28 grey: held with one channel in memory (7.8 MB for the test set), repeated to three
channels when a batch is made.

The four files (``.gz`` or unpacked) are looked for, in this order, in ``root``,
``root/<Name>`` and ``root/<Name>/raw`` (torchvision's layout)::

    train-images-idx3-ubyte[.gz]   train-labels-idx1-ubyte[.gz]
    t10k-images-idx3-ubyte[.gz]    t10k-labels-idx1-ubyte[.gz]

For Fashion-MNIST, when none of these folders holds the files, the Debian package
``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``) is used if installed.
With ``download=True`` missing files are downloaded into ``root/<Name>/raw``.

Example:
    >>> from anomalib_firm.data import FashionMNIST
    >>> datamodule = FashionMNIST(category="sneaker")  # Debian package, nothing to configure
    >>> datamodule.setup()
    >>> len(datamodule.train_data), len(datamodule.test_data) + len(datamodule.val_data)
    (6000, 10000)
"""

from __future__ import annotations

import gzip
import logging
import math
import struct
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torchvision.datasets.utils import download_url

from anomalib_firm.console import InputError, MissingInputError, UnavailableInputError
from anomalib_firm.data.dataset import SplitArrays
from anomalib_firm.data.downloadable import DownloadableDataModule

logger = logging.getLogger(__name__)

#: The four idx files, without the optional ``.gz``.
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MNIST_CLASSES = [str(digit) for digit in range(10)]
#: Path-safe names of the Fashion-MNIST classes ("T-shirt/top" and "Ankle boot" are accepted too).
FASHION_MNIST_CLASSES = [
    "tshirt_top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle_boot",
]
#: Where the Debian package ``dataset-fashion-mnist`` installs the files.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file of unsigned bytes (``.gz`` or not) into an array of its shape.

    Args:
        path (Path): File in the idx format (magic ``0x0000 08 <ndim>``, big-endian sizes).

    Returns:
        np.ndarray: ``uint8`` array, e.g. ``(N, 28, 28)`` for images, ``(N,)`` for labels.

    Raises:
        ValueError: If the file is not an idx file of unsigned bytes or is truncated.
    """
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as error:
        msg = f"Cannot read idx file '{path}': {error}"
        raise InputError(msg) from error
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        msg = f"'{path}' is not an idx file of unsigned bytes (magic {raw[:4].hex()}, expected 000008xx)."
        raise InputError(msg)
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) - header != math.prod(shape):
        msg = f"idx file '{path}' holds {len(raw) - header} bytes of data for the shape {shape}: truncated?"
        raise InputError(msg)
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


class _MNISTLike(DownloadableDataModule):
    """Shared loading of the idx-file data sets (see the subclasses)."""

    mirrors: tuple[str, ...]
    md5s: ClassVar[dict[str, str]]

    @property
    def fallback(self) -> Path | None:
        """Folder of a system package holding the files, used when ``root`` holds none of them."""
        return None

    @property
    def _candidates(self) -> list[Path]:
        return [self.root, self.root / self.name, self.root / self.name / "raw"]

    @staticmethod
    def _files_in(folder: Path) -> dict[str, Path]:
        """Return the idx files present in ``folder`` (plain name preferred over ``.gz``)."""
        found = {}
        for key, name in IDX_FILES.items():
            for candidate in (folder / name, folder / f"{name}.gz"):
                if candidate.is_file():
                    found[key] = candidate
                    break
        return found

    def _find_files(self) -> dict[str, Path] | None:
        for folder in self._candidates:
            found = self._files_in(folder)
            if len(found) == len(IDX_FILES):
                return found
        if self.fallback is not None and not any(self._files_in(folder) for folder in self._candidates):
            found = self._files_in(self.fallback)
            if len(found) == len(IDX_FILES):
                return found
        return None

    def _locate(self) -> dict[str, Path]:
        """Find the four files, downloading them first when allowed and missing."""
        found = self._find_files()
        if found is None and self.download:
            self._download(self.root / self.name / "raw")
            found = self._find_files()
        if found is None:
            names = ", ".join(f"{name}[.gz]" for name in IDX_FILES.values())
            folders = ", ".join(f"'{folder}'" for folder in self._candidates)
            fallback = f" (or the Debian package folder '{self.fallback}')" if self.fallback is not None else ""
            msg = (
                f"{self.name} files not found: expected {names} together in one of {folders}{fallback}. "
                f"Pass download=True to download them into '{self.root / self.name / 'raw'}'."
            )
            raise MissingInputError(msg)
        return found

    def _download(self, folder: Path) -> None:
        for name in IDX_FILES.values():
            filename = f"{name}.gz"
            if (folder / filename).is_file() or (folder / name).is_file():
                continue
            errors = []
            for mirror in self.mirrors:
                try:
                    logger.info("Downloading %s%s into %s", mirror, filename, folder)
                    download_url(f"{mirror}{filename}", str(folder), filename=filename, md5=self.md5s[filename])
                    break
                except (OSError, RuntimeError) as error:  # URLError is an OSError
                    errors.append(f"{mirror}: {error}")
            else:
                msg = f"Could not download {filename}:\n" + "\n".join(errors)
                raise UnavailableInputError(msg)

    def _read_split(self, split: str) -> SplitArrays:
        files = self._locate()
        images, labels = read_idx(files[f"{split}_images"]), read_idx(files[f"{split}_labels"])
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            msg = f"{self.name} {split} files hold images {images.shape} and labels {labels.shape}: they do not match."
            raise InputError(msg)
        if labels.max(initial=0) >= len(self.class_names):
            msg = f"{self.name} {split} labels exceed {len(self.class_names) - 1}."
            raise InputError(msg)
        # np.frombuffer arrays are read-only: copy once into a tensor (N, 1, H, W).
        return SplitArrays(
            images=torch.from_numpy(images[:, None].copy()),
            class_index=torch.from_numpy(labels.astype(np.int64)),
        )


class MNIST(_MNISTLike):
    """MNIST one-vs-rest: one (or several) of the digits ``"0"`` ... ``"9"`` is normal.

    The arguments not listed here are :class:`~anomalib_firm.data.base.OneVsRestDataModule`'s.

    Args:
        root (str | Path): Folder holding the idx files, directly or in ``MNIST/raw/``.
            Defaults to ``"./datasets"``.
        category (int | str | list[int | str]): Normal digit(s). Defaults to ``0``.
        download (bool): Download the files into ``root/MNIST/raw`` when missing. Defaults to ``False``.

    Example:
        >>> datamodule = MNIST(root="./datasets", category=[3, 8])
        >>> datamodule.category
        '3+8'
    """

    mirrors = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
    md5s: ClassVar[dict[str, str]] = {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    }

    @property
    def class_names(self) -> list[str]:
        """The digits ``"0"`` ... ``"9"``."""
        return list(MNIST_CLASSES)


class FashionMNIST(_MNISTLike):
    """Fashion-MNIST one-vs-rest: one (or several) of the 10 clothing classes is normal.

    Classes: ``tshirt_top, trouser, pullover, dress, coat, sandal, shirt, sneaker, bag,
    ankle_boot`` (torchvision's ``"T-shirt/top"``, ``"Ankle boot"`` are accepted too).
    Without files in ``root``, the Debian package ``dataset-fashion-mnist`` is used. The
    arguments not listed here are :class:`~anomalib_firm.data.base.OneVsRestDataModule`'s.

    Args:
        root (str | Path): Folder holding the idx files, directly or in
            ``FashionMNIST/raw/``. Defaults to ``"./datasets"``.
        category (int | str | list[int | str]): Normal class(es). Defaults to ``0`` (``tshirt_top``).
        download (bool): Download the files into ``root/FashionMNIST/raw`` when missing
            (and the Debian package is not installed). Defaults to ``False``.

    Example:
        >>> datamodule = FashionMNIST(category="ankle_boot")
        >>> datamodule.setup()
        >>> datamodule.train_data.images.shape  # the normal class only, one channel
        torch.Size([6000, 1, 28, 28])
    """

    mirrors = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
    md5s: ClassVar[dict[str, str]] = {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    }

    @property
    def fallback(self) -> Path | None:
        """The Debian package's folder (:data:`DEBIAN_FASHION_MNIST`)."""
        return DEBIAN_FASHION_MNIST

    @property
    def class_names(self) -> list[str]:
        """Path-safe names of the 10 Fashion-MNIST classes."""
        return list(FASHION_MNIST_CLASSES)
