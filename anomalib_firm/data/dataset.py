"""The in-memory anomalib dataset of one split: one shared ``uint8`` tensor, whole batches in one index.

- :class:`SplitArrays`: images and class indices of one split as loaded from disk;
- :class:`InMemoryImageDataset`: anomalib dataset over an :class:`~anomalib_firm.data.image_store.ImageStore`;
  :meth:`InMemoryImageDataset.__getitems__` gathers a whole batch with one tensor index (PyTorch's
  ``DataLoader`` calls it with the batch's indices), so no per-image Python runs while training.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd
import torch
from anomalib import TaskType
from anomalib.data.datasets.base.image import AnomalibDataset
from torchvision.tv_tensors import Image

from anomalib_firm.data.batch import OneVsRestImageBatch, OneVsRestImageItem
from anomalib_firm.data.image_store import ImageStore, register_store

if TYPE_CHECKING:
    from torchvision.transforms.v2 import Transform

_REQUIRED_COLUMNS = ("image_path", "split", "label_index", "class_label", "index")


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
            register_store(f"{name}/{category}/{split}", self.store)

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

    @AnomalibDataset.samples.setter  # type: ignore[attr-defined]  # mypy cannot follow a property's setter
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
        return cast("OneVsRestImageItem", next(iter(batch)))  # a batch iterates over items of its item class

    def __add__(self, other_dataset: AnomalibDataset) -> InMemoryImageDataset:  # type: ignore[override]  # as anomalib's
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
    return cast("OneVsRestImageBatch", OneVsRestImageBatch.collate(list(batch)))  # collate builds its own class
