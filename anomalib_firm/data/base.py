"""Base classes of the one-vs-rest data modules: images held in memory, batched in one step.

A labelled classification set (CIFAR-10, Fashion-MNIST, a folder per class...) becomes an
anomaly-detection task by declaring one class (or several) *normal*:

- train: the training images of the normal class(es) only;
- test: the whole test split, normal-class images labelled ``0``, all others ``1``;
- validation: carved out of the test split by anomalib's split modes (``from_test`` by
  default: a seeded, label-aware random split that removes those images from the test set).

Every split is one ``uint8`` tensor of shape ``(N, C, H, W)`` decoded once at set-up and
never written to disk (grey sets keep ``C = 1`` in memory). Subsets created by anomalib
(``subsample``, ``random_split``) share that tensor. A whole batch is gathered with one
tensor index in :meth:`InMemoryImageDataset.__getitems__`, which PyTorch's ``DataLoader``
calls with the list of batch indices, so no per-image Python runs while training.

The module contains:
    - :class:`ImageStore`: holder of one split's image tensor, shared by all subsets
    - :class:`SplitArrays`: images and class indices of one split as loaded from disk
    - :class:`InMemoryImageDataset`: anomalib dataset over an :class:`ImageStore`
    - :class:`OneVsRestDataModule`: base data module of the one-vs-rest data sets (its
      arguments, described once), and :func:`base_arguments`, which hands them on
"""

from __future__ import annotations

import copy
import inspect
import logging
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from anomalib import TaskType
from anomalib.data.datamodules.base.image import AnomalibDataModule
from anomalib.data.datasets.base.image import AnomalibDataset
from anomalib.data.utils import TestSplitMode, ValSplitMode
from torchvision.tv_tensors import Image

from anomalib_firm.console import InputError
from anomalib_firm.data import visualization
from anomalib_firm.data.batch import OneVsRestImageBatch, OneVsRestImageItem

if TYPE_CHECKING:
    from torchvision.transforms.v2 import Transform

logger = logging.getLogger(__name__)

_REQUIRED_COLUMNS = ("image_path", "split", "label_index", "class_label", "index")
_SUPPORTED_VAL_SPLIT_MODES = (
    ValSplitMode.NONE,
    ValSplitMode.SAME_AS_TEST,
    ValSplitMode.FROM_TEST,
    ValSplitMode.FROM_TRAIN,
)
_SUPPORTED_TEST_SPLIT_MODES = (TestSplitMode.NONE, TestSplitMode.FROM_DIR)


class ImageStore:
    """Holds the image tensor of one split; copies of a dataset share it instead of copying it.

    anomalib deep-copies datasets whenever it takes a subset (``subsample``,
    ``random_split``, ``+``); :meth:`__deepcopy__` returning ``self`` keeps one tensor per
    split however many subsets exist.

    Args:
        images (torch.Tensor): ``uint8`` tensor of shape ``(N, C, H, W)`` with ``C`` 1 or 3.
    """

    def __init__(self, images: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in {1, 3}:
            msg = f"Images must be a uint8 tensor of shape (N, 1|3, H, W), got {images.dtype} {tuple(images.shape)}."
            raise ValueError(msg)
        self.images = images.contiguous()

    def __len__(self) -> int:
        return self.images.shape[0]

    def __copy__(self) -> ImageStore:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> ImageStore:
        return self


@dataclass
class SplitArrays:
    """Images and class indices of one split, as returned by a data module's loader.

    Args:
        images (torch.Tensor): ``uint8`` images of shape ``(N, C, H, W)``, ``C`` 1 or 3.
        class_index (torch.Tensor): ``int64`` class of each image, shape ``(N,)``: index into
            the data module's ``class_names``.
        paths (list[str] | None): Source file of each image, used as ``image_path`` when
            given; ``None`` gives pseudo paths ``<dataset>/<category>/<split>/<class>/<index>.png``.
    """

    images: torch.Tensor
    class_index: torch.Tensor
    paths: list[str] | None = None

    def __post_init__(self) -> None:
        self.class_index = torch.as_tensor(self.class_index, dtype=torch.int64)
        if self.class_index.ndim != 1 or len(self.class_index) != len(self.images):
            msg = f"Got {len(self.images)} images but {tuple(self.class_index.shape)} class indices."
            raise ValueError(msg)
        if self.paths is not None and len(self.paths) != len(self.images):
            msg = f"Got {len(self.images)} images but {len(self.paths)} paths."
            raise ValueError(msg)

    def select(self, class_indices: Sequence[int]) -> SplitArrays:
        """Keep only the images of the given classes (copies them into a new tensor)."""
        keep = torch.isin(self.class_index, torch.as_tensor(list(class_indices), dtype=torch.int64))
        positions = keep.nonzero().squeeze(1)
        paths = None if self.paths is None else [self.paths[i] for i in positions.tolist()]
        return SplitArrays(images=self.images[positions], class_index=self.class_index[positions], paths=paths)


def _normalise_name(name: str) -> str:
    """Lower-case a class name and drop everything but letters and digits ("T-shirt/top" -> "tshirttop")."""
    return re.sub(r"[^0-9a-z]", "", name.casefold())


def resolve_classes(category: int | str | Sequence[int | str], class_names: Sequence[str], dataset: str) -> list[int]:
    """Turn a category argument into sorted, unique class indices.

    Args:
        category (int | str | Sequence[int | str]): Class name or index (``int`` or digit
            string), a list of those, or names joined with ``"+"`` (``"cat+dog"``). Names
            match exactly, else ignoring case and punctuation (``"T-shirt/top"``).
        class_names (Sequence[str]): Names of the data set's classes, in label order.
        dataset (str): Name of the data set, for error messages.

    Returns:
        list[int]: Indices into ``class_names``, sorted, without duplicates.

    Raises:
        ValueError: If a class is unknown (the message lists the valid names) or none is given.
    """
    items = list(category) if isinstance(category, list | tuple) else [category]
    indices: set[int] = set()
    for item in items:
        indices.update(_resolve_one(item, class_names, dataset))
    if not indices:
        msg = f"No normal class given for {dataset}: category must name at least one class."
        raise InputError(msg)
    return sorted(indices)


def _resolve_one(item: int | str, class_names: Sequence[str], dataset: str) -> list[int]:
    """Resolve one class name or index (or ``"a+b"``) to class indices."""
    if isinstance(item, int) and not isinstance(item, bool) and 0 <= item < len(class_names):
        return [item]
    if isinstance(item, str):
        name = item.strip()
        if name in class_names:
            return [class_names.index(name)]
        normalised = [_normalise_name(class_name) for class_name in class_names]
        if _normalise_name(name) and _normalise_name(name) in normalised:
            return [normalised.index(_normalise_name(name))]
        if name.isdigit() and int(name) < len(class_names):
            return [int(name)]
        if "+" in name:
            return [
                index for part in name.split("+") if part.strip() for index in _resolve_one(part, class_names, dataset)
            ]
    valid = ", ".join(f"{index}={name!r}" for index, name in enumerate(class_names))
    msg = f"Unknown class {item!r} for {dataset}. Valid classes (index=name; give either): {valid}."
    raise InputError(msg)


class InMemoryImageDataset(AnomalibDataset):
    """anomalib dataset whose images live in one shared ``uint8`` tensor.

    The ``samples`` table has one row per image with the columns ``image_path`` (a pseudo
    path unless real source files are known), ``split``, ``label`` / ``label_index``
    (``0`` normal, ``1`` anomalous), ``class_index`` / ``class_name`` (class in the data
    set), ``class_label`` (position of the class in the normal classes, ``-1`` for other
    classes) and ``index`` (row of the image in the tensor).

    Args:
        name (str): Name of the data set (e.g. ``"CIFAR10"``), first part of pseudo paths.
        split (str): ``"train"`` or ``"test"``.
        arrays (SplitArrays): Images and class indices of the split.
        class_names (Sequence[str]): Names of all classes of the data set.
        normal_indices (Sequence[int]): Indices of the normal classes, sorted.
        category (str): Readable category (normal class names joined with ``"+"``).
        augmentations (Transform | None): Applied to each whole batch of float images in
            ``[0, 1]`` (anomalib appends the model's ``Resize`` here). Defaults to ``None``.

    Example:
        >>> arrays = SplitArrays(images=torch.zeros(4, 1, 8, 8, dtype=torch.uint8), class_index=[0, 1, 2, 0])
        >>> dataset = InMemoryImageDataset("Toy", "test", arrays, ["a", "b", "c"], [0, 2], "a+c")
        >>> batch = dataset.__getitems__([0, 1, 2, 3])  # rows sorted by path: a, a, b, c
        >>> batch.image.shape, batch.class_label, batch.gt_label
        (torch.Size([4, 3, 8, 8]), tensor([ 0,  0, -1,  1]), tensor([False, False,  True, False]))
    """

    #: Images were decoded when the data module loaded them: nothing to check on disk before training.
    holds_images_in_memory = True

    def __init__(
        self,
        name: str,
        split: str,
        arrays: SplitArrays,
        class_names: Sequence[str],
        normal_indices: Sequence[int],
        category: str,
        augmentations: Transform | None = None,
    ) -> None:
        super().__init__(augmentations=augmentations)
        self._name = name
        self.category = category
        self.store = ImageStore(arrays.images)
        self.samples = self._make_samples(split, arrays, class_names, normal_indices)
        if arrays.paths is None:  # pseudo paths: InMemoryImageVisualizer finds the images in memory
            visualization.register_store(f"{name}/{category}/{split}", self.store)

    def _make_samples(
        self, split: str, arrays: SplitArrays, class_names: Sequence[str], normal_indices: Sequence[int]
    ) -> pd.DataFrame:
        """Build the samples table of a split (vectorised; no per-image Python beyond the paths)."""
        class_index = arrays.class_index.numpy()
        class_label = np.full(len(class_names), -1, dtype=np.int64)
        class_label[list(normal_indices)] = np.arange(len(normal_indices))
        class_label = class_label[class_index]
        names = np.asarray(class_names, dtype=object)[class_index]
        if arrays.paths is None:
            width = max(5, len(str(max(len(class_index) - 1, 0))))
            paths = [
                f"{self._name}/{self.category}/{split}/{class_name}/{index:0{width}d}.png"
                for index, class_name in enumerate(names)
            ]
        else:
            paths = list(arrays.paths)
        label_index = (class_label < 0).astype(np.int64)
        samples = pd.DataFrame(
            {
                "image_path": paths,
                "split": split,
                "label": np.where(label_index == 0, "normal", "abnormal"),
                "label_index": label_index,
                "class_index": class_index,
                "class_name": names,
                "class_label": class_label,
                "index": np.arange(len(class_index), dtype=np.int64),
            }
        )
        samples.attrs["task"] = TaskType.CLASSIFICATION
        return samples

    @property
    def name(self) -> str:
        """Name of the data set (e.g. ``"CIFAR10"``)."""
        return self._name

    @property
    def task(self) -> TaskType:
        """Always classification: the data sets have image labels only."""
        return TaskType.CLASSIFICATION

    @AnomalibDataset.samples.setter
    def samples(self, samples: pd.DataFrame) -> None:
        """Set the samples table without checking that ``image_path`` exists on disk.

        Rows are sorted by ``image_path`` as anomalib does (pseudo paths are zero-padded,
        so the order is stable). Caches the columns a batch needs as tensors.
        """
        if not isinstance(samples, pd.DataFrame):
            msg = f"samples must be a pandas.DataFrame, found {type(samples)}"
            raise TypeError(msg)
        missing = [column for column in _REQUIRED_COLUMNS if column not in samples.columns]
        if missing:
            msg = f"samples lacks the column(s) {missing}; found {list(samples.columns)}"
            raise ValueError(msg)
        self._samples = samples.sort_values(by="image_path", ignore_index=True)
        self._rows = torch.tensor(self._samples["index"].to_numpy(dtype=np.int64))
        self._gt_labels = torch.tensor(self._samples["label_index"].to_numpy(dtype=np.int64))
        self._class_labels = torch.tensor(self._samples["class_label"].to_numpy(dtype=np.int64))
        self._paths = self._samples["image_path"].to_numpy(dtype=object)

    def __deepcopy__(self, memo: dict[int, Any]) -> InMemoryImageDataset:
        """Copy cheaply: share the image store and the per-row caches (replaced, never mutated)."""
        clone = copy.copy(self)
        memo[id(self)] = clone
        clone._samples = None if self._samples is None else self._samples.copy()
        clone.augmentations = copy.deepcopy(self.augmentations, memo)
        return clone

    @property
    def images(self) -> torch.Tensor:
        """The split's ``uint8`` tensor ``(N, C, H, W)``, shared with every subset (not only this subset's rows)."""
        return self.store.images

    def __getitems__(self, indices: Sequence[int]) -> OneVsRestImageBatch:
        """Gather a whole batch at once (called by ``DataLoader`` with the batch's indices).

        Args:
            indices (Sequence[int]): Positions in this dataset.

        Returns:
            OneVsRestImageBatch: ``image`` float ``(B, 3, H', W')`` in ``[0, 1]`` after the
            augmentations, ``gt_label`` ``(B,)``, ``class_label`` ``(B,)``, ``image_path``.
        """
        positions = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
        images = self.store.images[self._rows[positions]]
        # One float conversion for the whole batch, then grey images get 3 identical channels.
        images = Image(images.to(torch.float32).div_(255.0).expand(-1, 3, -1, -1).contiguous())
        if self.augmentations is not None:
            images = self.augmentations(images)
        return OneVsRestImageBatch(
            image=images,
            gt_label=self._gt_labels[positions],
            class_label=self._class_labels[positions],
            image_path=self._paths[positions.numpy()].tolist(),
        )

    def __getitem__(self, index: int) -> OneVsRestImageItem:
        """Get one image as an item (same values as in a batch).

        Args:
            index (int): Position in this dataset.

        Returns:
            OneVsRestImageItem: ``image`` float ``(3, H', W')``, ``gt_label``, ``class_label``, ``image_path``.
        """
        if not -len(self) <= int(index) < len(self):
            msg = f"Index {index} out of range for a dataset of {len(self)} images."
            raise IndexError(msg)
        batch = self.__getitems__([int(index) % len(self)])
        return OneVsRestImageItem(
            image=batch.image[0],
            gt_label=batch.gt_label[0],
            class_label=batch.class_label[0],
            image_path=batch.image_path[0],
        )

    def __add__(self, other_dataset: AnomalibDataset) -> InMemoryImageDataset:
        """Concatenate two subsets of the same split (they must share one image tensor)."""
        if not isinstance(other_dataset, InMemoryImageDataset) or other_dataset.store is not self.store:
            msg = "Only subsets of the same in-memory split (sharing one image tensor) can be concatenated."
            raise TypeError(msg)
        dataset = copy.deepcopy(self)
        dataset.samples = pd.concat([self.samples, other_dataset.samples], ignore_index=True)
        return dataset

    @property
    def collate_fn(self) -> Callable:
        """Pass the batch made by :meth:`__getitems__` through unchanged (lists of items are collated)."""
        return collate_batch


def collate_batch(batch: OneVsRestImageBatch | list[OneVsRestImageItem]) -> OneVsRestImageBatch:
    """Collate function of :class:`InMemoryImageDataset` (a module function so that workers can pickle it).

    Args:
        batch (OneVsRestImageBatch | list[OneVsRestImageItem]): A ready batch, or items.

    Returns:
        OneVsRestImageBatch: The batch itself, or the items collated.
    """
    if isinstance(batch, OneVsRestImageBatch):
        return batch
    return OneVsRestImageBatch.collate(list(batch))


class OneVsRestDataModule(AnomalibDataModule, ABC):
    """Base of the one-vs-rest data modules: normal class(es) vs every other class.

    Subclasses give ``class_names`` and load the splits (:meth:`_read_split`, or
    :meth:`_load_train` and :meth:`_load_test`); this class builds the in-memory datasets, the
    splits and the category. Set the subclass's own attributes *before* calling
    ``super().__init__`` (:func:`base_arguments` picks this class's arguments from the
    subclass's): the category is resolved against ``class_names`` there.

    The arguments are described once, in :meth:`__init__`'s docstring, which a subclass's own
    ``__init__`` without a docstring receives (:meth:`__init_subclass__`): jsonargparse reads the
    help of ``--data.help`` from a class's ``__init__`` and class docstrings, so the class
    docstring of a data module documents only its own arguments (and overrides these texts).

    Note:
        Augmentations run on whole batches: a random transform draws its parameters once per
        batch, not once per image.
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
        """Arguments of every one-vs-rest data module.

        Args:
            category (int | str | list[int | str]): Normal class(es): a name or an index (as
                ``int`` or string), a list of them, or names joined with ``"+"``. Defaults to ``0``.
            train_batch_size (int): Batch size of the train loader. Defaults to ``64``.
            eval_batch_size (int): Batch size of the validation and test loaders. Defaults to ``256``.
            num_workers (int): Loader workers (``0``, the default, is usually fastest: batches are
                one tensor index).
            train_augmentations (Transform | None): Augmentations of training batches. Defaults to ``None``.
            val_augmentations (Transform | None): Augmentations of validation batches. Defaults to ``None``.
            test_augmentations (Transform | None): Augmentations of test batches. Defaults to ``None``.
            augmentations (Transform | None): Used where no stage-specific one is given. Defaults to ``None``.
            val_split_mode (str): ``"from_test"`` (default: seeded, label-aware random split removed
                from the test set), ``"same_as_test"``, ``"from_train"`` (normal images only) or ``"none"``.
            val_split_ratio (float): Fraction of the source split that becomes validation. Defaults to ``0.2``.
            test_split_mode (str): ``"none"`` (default, or ``"from_dir"``): the test split is the
                whole test set (normal classes ``0``, others ``1``).
            seed (int | None): Seeds the splits, so they are the same at each run. Defaults to ``0``.
            max_train_images (int | None): Keep a seeded random subset of this many training images
                (quick benchmarks on a CPU); ``None`` (default) keeps all.
            max_test_images (int | None): Keep a seeded, class-stratified subset of this many test
                images *before* the validation split is carved out; ``None`` (default) keeps all.
        """
        super().__init__(
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
        )
        if self.val_split_mode not in _SUPPORTED_VAL_SPLIT_MODES:
            modes = [mode.value for mode in _SUPPORTED_VAL_SPLIT_MODES]
            msg = f"val_split_mode {self.val_split_mode.value!r} is not supported for in-memory data; use {modes}."
            raise InputError(msg)
        if self.test_split_mode not in _SUPPORTED_TEST_SPLIT_MODES:
            modes = [mode.value for mode in _SUPPORTED_TEST_SPLIT_MODES]
            msg = f"test_split_mode {self.test_split_mode.value!r} is not supported for in-memory data; use {modes}."
            raise InputError(msg)
        for name, value in (("max_train_images", max_train_images), ("max_test_images", max_test_images)):
            if value is not None and value < 1:
                msg = f"{name} must be a positive number of images or None, got {value}."
                raise InputError(msg)
        self.max_train_images = max_train_images
        self.max_test_images = max_test_images
        self._loaded: tuple[SplitArrays, SplitArrays] | None = None
        self._normal_indices: list[int] = []
        self.category = category  # type: ignore[assignment]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass's own ``__init__`` without a docstring gets :meth:`__init__`'s (the common arguments' help)."""
        super().__init_subclass__(**kwargs)
        init = vars(cls).get("__init__")
        if init is not None and not init.__doc__:
            init.__doc__ = OneVsRestDataModule.__init__.__doc__

    @property
    @abstractmethod
    def class_names(self) -> list[str]:
        """Names of all classes of the data set, in label order."""

    def _read_split(self, split: str) -> SplitArrays:
        """Load a whole split (``"train"`` or ``"test"``): what :meth:`_load_train` and :meth:`_load_test` read.

        A subclass implements this, or overrides both of those (to read only the normal classes' files).
        """
        msg = f"{type(self).__name__} implements neither _read_split nor _load_train and _load_test."
        raise NotImplementedError(msg)

    def _load_train(self, class_indices: list[int]) -> SplitArrays:
        """Load the training images of the given classes only."""
        return self._read_split("train").select(class_indices)

    def _load_test(self) -> SplitArrays:
        """Load the whole test split."""
        return self._read_split("test")

    @property
    def category(self) -> str:
        """Normal class name(s), joined with ``"+"``: names the results folder."""
        return "+".join(self.normal_classes)

    @category.setter
    def category(self, category: int | str | list[int | str]) -> None:
        indices = resolve_classes(category, self.class_names, self.name)
        if indices != self._normal_indices:
            self._normal_indices = indices
            self._loaded = None  # the training split holds the normal classes only

    @property
    def normal_class_indices(self) -> list[int]:
        """Indices (into ``class_names``) of the normal classes, sorted."""
        return list(self._normal_indices)

    @property
    def normal_classes(self) -> list[str]:
        """Names of the normal classes; ``class_label`` of a batch indexes this list."""
        return [self.class_names[index] for index in self._normal_indices]

    @property
    def num_normal_classes(self) -> int:
        """Number of normal classes."""
        return len(self._normal_indices)

    @property
    def image_memory_bytes(self) -> int:
        """Bytes taken by the in-memory image tensors (train + test); ``0`` before set-up."""
        if self._loaded is None:
            return 0
        return sum(arrays.images.numel() for arrays in self._loaded)

    def _setup(self, _stage: str | None = None) -> None:
        """Load the splits once (later calls reuse them) and build the train and test datasets."""
        if self._loaded is None:
            start = time.perf_counter()
            self._loaded = (self._load_train(self.normal_class_indices), self._load_test())
            logger.info(
                "%s loaded in %.2f s: %d training images of %s, %d test images, %.1f MB of uint8 images in memory.",
                self.name,
                time.perf_counter() - start,
                len(self._loaded[0].images),
                self.category,
                len(self._loaded[1].images),
                self.image_memory_bytes / 2**20,
            )
        train, test = self._loaded
        if len(train.images) == 0:
            msg = f"{self.name} has no training images of the normal class(es) {self.normal_classes}."
            raise InputError(msg)
        if len(test.images) == 0:
            msg = f"{self.name} has no test images."
            raise InputError(msg)
        common = {"name": self.name, "class_names": self.class_names, "normal_indices": self._normal_indices}
        self.train_data = InMemoryImageDataset(split="train", arrays=train, category=self.category, **common)
        self.test_data = InMemoryImageDataset(split="test", arrays=test, category=self.category, **common)
        for dataset, limit in ((self.train_data, self.max_train_images), (self.test_data, self.max_test_images)):
            if limit is not None and limit < len(dataset):
                keep = _stratified_subset(dataset.samples["class_index"].to_numpy(), limit, self.seed)
                dataset.subsample(keep, inplace=True)

    def _create_test_split(self) -> None:
        """Keep the whole test split (anomalib's own step would drop its normal images in mode ``none``)."""


def base_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """The arguments of :class:`OneVsRestDataModule` among a subclass ``__init__``'s ``locals()``.

    A data module keeps its explicit signature (the CLI's ``--data.help`` lists every option from it)
    and hands the common arguments on with ``super().__init__(**base_arguments(locals()))``.
    """
    return {name: arguments[name] for name in _BASE_PARAMETERS}


_BASE_PARAMETERS = tuple(inspect.signature(OneVsRestDataModule.__init__).parameters)[1:]


def _stratified_subset(class_index: np.ndarray, size: int, seed: int | None) -> list[int]:
    """Seeded subset of ``size`` rows with each class's share kept (largest remainders round).

    Args:
        class_index: (N,) class of each row.
        size: Rows to keep, ``< N``.
        seed: Seed of the draw (``None``: 0, so the subset is the same at each run).

    Returns:
        Sorted row positions.
    """
    generator = np.random.default_rng(0 if seed is None else seed)
    classes, counts = np.unique(class_index, return_counts=True)
    exact = counts * size / len(class_index)
    quota = np.floor(exact).astype(int)
    quota[np.argsort(quota - exact)[: size - quota.sum()]] += 1
    keep = [
        generator.permutation(np.flatnonzero(class_index == label))[:take]
        for label, take in zip(classes, quota, strict=True)
    ]
    return sorted(int(row) for row in np.concatenate(keep))
