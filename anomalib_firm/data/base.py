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

This module holds :class:`OneVsRestDataModule`, the base data module of the one-vs-rest data
sets (its arguments, described once), and :func:`base_arguments`, which hands them on. The
images live in :mod:`.image_store`, the dataset is :mod:`.dataset`, categories are resolved by
:mod:`.class_names`.
"""

from __future__ import annotations

import inspect
import logging
import time
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

import numpy as np
from anomalib.data.datamodules.base.image import AnomalibDataModule
from anomalib.data.utils import TestSplitMode, ValSplitMode

from anomalib_firm.console import InputError
from anomalib_firm.data.class_names import resolve_classes
from anomalib_firm.data.dataset import InMemoryImageDataset, SplitArrays

if TYPE_CHECKING:
    from torchvision.transforms.v2 import Transform

logger = logging.getLogger(__name__)

_SUPPORTED_VAL_SPLIT_MODES = (
    ValSplitMode.NONE,
    ValSplitMode.SAME_AS_TEST,
    ValSplitMode.FROM_TEST,
    ValSplitMode.FROM_TRAIN,
)
_SUPPORTED_TEST_SPLIT_MODES = (TestSplitMode.NONE, TestSplitMode.FROM_DIR)


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
        self.category = category

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
        common: dict[str, Any] = {
            "name": self.name,
            "class_names": self.class_names,
            "normal_indices": self._normal_indices,
        }
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
