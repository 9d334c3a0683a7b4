"""One-vs-rest data module over any folder tree with one sub-folder of images per class.

Two layouts::

    root/                       train_dir/          test_dir/
    ├── cat/  a.png ...         ├── cat/ ...        ├── cat/ ...
    ├── dog/  ...               └── dog/ ...        ├── dog/ ...
    └── fox/  ...                                   └── fox/ ...

- one ``root``: each class's images are split by a seeded ``train_ratio`` (the same split
  whatever the normal class, so every category is tested on the same images); the
  training parts of the normal classes train the model, the test parts of all classes
  form the test split;
- ``train_dir`` + ``test_dir`` (relative to ``root`` when ``root`` is given): the normal
  classes' folders under ``train_dir`` train the model, everything under ``test_dir`` is
  the test split. A class may exist in only one of the two folders.

Images are decoded once (in threads) into one ``uint8`` tensor per split; grey, palette
and RGBA images become RGB, 16-bit grey images are scaled to 8 bits (32-bit and float ones
are refused, naming the file); ``image_size`` resizes at load time so that images of
different sizes stack. ``image_path`` of each item is the real source file.

Example:
    >>> from anomalib_firm.data import ClassFolder
    >>> datamodule = ClassFolder(root="./datasets/shapes", category="circle", image_size=64)
    >>> datamodule.setup()
    >>> datamodule.class_names
    ['circle', 'square', 'triangle']
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from anomalib_firm.console import InputError, MissingInputError
from anomalib_firm.data.base import OneVsRestDataModule, base_arguments
from anomalib_firm.data.dataset import SplitArrays
from anomalib_firm.data.image_depth import to_8bit

if TYPE_CHECKING:
    from collections.abc import Sequence

    from torchvision.transforms.v2 import Transform

logger = logging.getLogger(__name__)

DEFAULT_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")


def list_images(folder: Path, extensions: Sequence[str]) -> list[Path]:
    """Image files directly inside ``folder`` (by extension, hidden files skipped), sorted.

    Raises:
        FileNotFoundError: If ``folder`` does not exist.
        ValueError: If ``folder`` holds no image file.
    """
    if not folder.is_dir():
        msg = f"Class folder '{folder}' does not exist."
        raise MissingInputError(msg)
    suffixes = {extension.lower() for extension in extensions}
    files = sorted(
        path
        for path in folder.iterdir()
        if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in suffixes
    )
    if not files:
        msg = f"Class folder '{folder}' holds no image file (extensions {sorted(suffixes)})."
        raise InputError(msg)
    return files


def read_rgb(path: Path, size: tuple[int, int] | None) -> np.ndarray:
    """Decode one image file to an RGB ``uint8`` array ``(H, W, 3)``, resized to ``size`` (h, w) if given.

    Raises:
        ValueError: If the file cannot be decoded (the message names it).
    """
    try:
        with Image.open(path) as image:
            image = to_8bit(image)  # 16-bit grey: scaled, not clipped by convert("RGB")
            if image.mode == "P":  # palette (possibly with transparency): through RGBA to RGB
                image = image.convert("RGBA")
            image = image.convert("RGB")
            if size is not None and image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            return np.asarray(image, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as error:
        msg = f"Cannot read image file '{path}': {error}"
        raise InputError(msg) from error


def decode_images(paths: Sequence[Path], size: tuple[int, int] | None) -> torch.Tensor:
    """Decode image files in threads into one ``uint8`` tensor ``(N, 3, H, W)``.

    Args:
        paths (Sequence[Path]): Image files.
        size (tuple[int, int] | None): ``(h, w)`` to resize to; ``None``: all images must
            have the size of the first one.

    Raises:
        ValueError: If a file cannot be decoded, or sizes differ while ``size`` is ``None``.
    """
    if not paths:
        return torch.empty(0, 3, *(size or (1, 1)), dtype=torch.uint8)
    first = read_rgb(paths[0], size)
    height, width = first.shape[:2]
    images = np.empty((len(paths), height, width, 3), dtype=np.uint8)
    images[0] = first

    def load(position: int) -> None:
        image = read_rgb(paths[position], size)
        if image.shape[:2] != (height, width):
            msg = (
                f"Image '{paths[position]}' is {image.shape[1]}x{image.shape[0]} but '{paths[0]}' is "
                f"{width}x{height}: pass image_size to resize all images at load time."
            )
            raise InputError(msg)
        images[position] = image

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as executor:
        list(executor.map(load, range(1, len(paths))))
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


class ClassFolder(OneVsRestDataModule):
    """One-vs-rest over a folder tree ``<folder>/<class>/<images>``.

    The arguments not listed here are :class:`~anomalib_firm.data.base.OneVsRestDataModule`'s.

    Args:
        root (str | Path | None): Folder with one sub-folder per class (split by
            ``train_ratio``), or the base of relative ``train_dir`` / ``test_dir``.
        category (int | str | list[int | str]): Normal class(es): folder name or index in
            the sorted class names, a list, or names joined with ``"+"``. Defaults to ``0``.
        train_dir (str | Path | None): Folder of training class folders (with ``test_dir``).
        test_dir (str | Path | None): Folder of test class folders (with ``train_dir``).
        train_ratio (float): Share of each class's images that goes to training in the
            one-``root`` layout. Defaults to ``0.8``.
        image_size (int | tuple[int, int] | None): ``(h, w)`` (or one side of a square) to
            resize every image to at load time. Defaults to ``None`` (all images must have
            one size).
        extensions (list[str] | None): Image file extensions. Defaults to common formats.
        name (str | None): Data set name, used for the results folder. Defaults to ``"ClassFolder"``.
        seed (int | None): Seeds the per-class train/test split and the validation split.
            Defaults to ``0``.

    Raises:
        FileNotFoundError: If a folder is missing (the message names it).
        ValueError: If a class folder is empty or an image file is unreadable (named), or
            the arguments do not describe one of the two layouts.

    Example:
        >>> datamodule = ClassFolder(
        ...     root="./datasets/parts", train_dir="train", test_dir="test", category="good", image_size=[128, 128]
        ... )
        >>> datamodule.normal_classes
        ['good']
    """

    def __init__(
        self,
        root: str | Path | None = None,
        category: int | str | list[int | str] = 0,
        train_dir: str | Path | None = None,
        test_dir: str | Path | None = None,
        train_ratio: float = 0.8,
        image_size: int | tuple[int, int] | None = None,
        extensions: list[str] | None = None,
        name: str | None = None,
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
        if (train_dir is None) != (test_dir is None):
            msg = "Give both train_dir and test_dir, or neither (then root is split by train_ratio)."
            raise InputError(msg)
        if train_dir is None and root is None:
            msg = "Give root (one folder per class) or train_dir and test_dir."
            raise InputError(msg)
        if not 0.0 < train_ratio < 1.0:
            msg = f"train_ratio must be between 0 and 1 (exclusive), got {train_ratio}."
            raise InputError(msg)
        self.root = Path(root) if root is not None else None
        self.train_dir = self._under_root(train_dir)
        self.test_dir = self._under_root(test_dir)
        self.train_ratio = train_ratio
        self.image_size = self._as_size(image_size)
        self.extensions = tuple(extensions) if extensions else DEFAULT_EXTENSIONS
        self._name = name or self.__class__.__name__
        self._seed = seed if seed is not None else 0
        self._class_names = self._scan_classes()
        super().__init__(**base_arguments(locals()))

    def _under_root(self, folder: str | Path | None) -> Path | None:
        if folder is None:
            return None
        folder = Path(folder)
        return self.root / folder if self.root is not None and not folder.is_absolute() else folder

    @staticmethod
    def _as_size(image_size: int | Sequence[int] | None) -> tuple[int, int] | None:
        if image_size is None:
            return None
        size = (int(image_size), int(image_size)) if isinstance(image_size, int) else tuple(int(s) for s in image_size)
        if len(size) != 2 or min(size) < 1:
            msg = f"image_size must be a positive int or (height, width), got {image_size!r}."
            raise InputError(msg)
        return size

    @property
    def name(self) -> str:  # type: ignore[override]  # anomalib's data modules declare ``name`` a plain attribute
        """Data set name (``name`` argument, else ``"ClassFolder"``)."""
        return self._name

    @property
    def class_names(self) -> list[str]:
        """Sorted names of the class folders."""
        return list(self._class_names)

    @staticmethod
    def _class_folders(folder: Path) -> list[str]:
        if not folder.is_dir():
            msg = f"Folder '{folder}' does not exist."
            raise MissingInputError(msg)
        return sorted(path.name for path in folder.iterdir() if path.is_dir() and not path.name.startswith("."))

    def _scan_classes(self) -> list[str]:
        folders = [self.train_dir, self.test_dir] if self.train_dir is not None else [self.root]
        names = sorted({name for folder in folders for name in self._class_folders(folder)})  # type: ignore[arg-type]  # root is set when train_dir is not
        if not names:
            msg = f"No class sub-folder found in {', '.join(repr(str(folder)) for folder in folders)}."
            raise InputError(msg)
        return names

    def _files(self, folder: Path, class_indices: Sequence[int], required: bool) -> tuple[list[Path], list[int]]:
        """Image files and class indices of the given classes under ``folder``.

        A class folder that is missing is skipped unless ``required``; an empty one is an error.
        """
        paths: list[Path] = []
        labels: list[int] = []
        for index in class_indices:
            class_folder = folder / self._class_names[index]
            if not class_folder.exists() and not required:
                continue
            files = list_images(class_folder, self.extensions)
            paths += files
            labels += [index] * len(files)
        return paths, labels

    def _split_root(self, class_index: int) -> tuple[list[Path], list[Path]]:
        """Seeded split of one class's files into training and test files (by ``train_ratio``)."""
        files = list_images(self.root / self._class_names[class_index], self.extensions)  # type: ignore[operator]  # root is set in this layout
        rng = np.random.default_rng([self._seed, class_index])
        order = rng.permutation(len(files))
        n_train = min(max(round(len(files) * self.train_ratio), 1), len(files))
        return [files[i] for i in sorted(order[:n_train])], [files[i] for i in sorted(order[n_train:])]

    def _arrays(self, paths: list[Path], labels: list[int]) -> SplitArrays:
        return SplitArrays(
            images=decode_images(paths, self.image_size),
            class_index=torch.as_tensor(labels, dtype=torch.int64),
            paths=[str(path) for path in paths],
        )

    def _root_part(self, class_indices: Sequence[int], part: int) -> SplitArrays:
        """The training (``part`` 0) or test (1) part of the given classes in the one-``root`` layout."""
        paths: list[Path] = []
        labels: list[int] = []
        for index in class_indices:
            files = self._split_root(index)[part]
            paths += files
            labels += [index] * len(files)
        return self._arrays(paths, labels)

    def _load_train(self, class_indices: list[int]) -> SplitArrays:
        if self.train_dir is not None:
            return self._arrays(*self._files(self.train_dir, class_indices, required=True))
        return self._root_part(class_indices, 0)

    def _load_test(self) -> SplitArrays:
        all_classes = list(range(len(self._class_names)))
        if self.test_dir is not None:
            return self._arrays(*self._files(self.test_dir, all_classes, required=False))
        return self._root_part(all_classes, 1)
