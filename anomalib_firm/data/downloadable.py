"""Base of the data modules read from files under ``root`` that can be downloaded (CIFAR, MNIST).

The module contains:
    - :class:`DownloadableDataModule`: ``root`` and ``download`` in front of and after the common
      arguments of :class:`~anomalib_firm.data.base.OneVsRestDataModule`; ``prepare_data`` finds
      (or downloads) the files
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anomalib_firm.data.base import OneVsRestDataModule, base_arguments

if TYPE_CHECKING:
    from torchvision.transforms.v2 import Transform


class DownloadableDataModule(OneVsRestDataModule):
    """A one-vs-rest data set read from files under ``root``, downloaded there when allowed and missing.

    Subclasses find the files (:meth:`_locate`, which downloads them when ``download`` is set and
    they are missing) and read a whole split (:meth:`_read_split`). The public subclasses document
    ``root`` and ``download`` (where their files go); the other arguments are
    :class:`~anomalib_firm.data.base.OneVsRestDataModule`'s.

    Args:
        root (str | Path): Folder holding the data set's files. Defaults to ``"./datasets"``.
        download (bool): Download the files into ``root`` when missing. Defaults to ``False``.
    """

    def __init__(
        self,
        root: str | Path = "./datasets",
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
        download: bool = False,
    ) -> None:
        self.root = Path(root)
        self.download = download
        super().__init__(**base_arguments(locals()))

    @abstractmethod
    def _locate(self) -> Any:
        """Find the data set's files (downloading them first when allowed and missing); raise if absent."""

    def prepare_data(self) -> None:
        """Download the files when ``download=True`` and they are missing."""
        self._locate()
