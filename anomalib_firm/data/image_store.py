"""One split's images held in memory, shared by every subset, and reachable from their pseudo paths.

In-memory data sets have pseudo paths (``Digits/0/test/3/00012.png``), not files: the registry
here lets the visualizer find such an image in memory (:func:`original_image`).
"""

from __future__ import annotations

import weakref
from typing import Any

import torch

from anomalib_firm.data.batch import OneVsRestImageItem


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


#: ``"<dataset>/<category>/<split>"`` -> the split's image store (weakly held).
_STORES: dict[str, weakref.ref[ImageStore]] = {}


def register_store(prefix: str, store: ImageStore) -> None:
    """Make the images of ``store`` reachable from pseudo paths starting with ``prefix/``.

    Args:
        prefix (str): ``"<dataset>/<category>/<split>"``.
        store (ImageStore): The split's images; row ``i`` has the pseudo path ``.../<i>.png``.
    """
    _STORES[prefix] = weakref.ref(store)


def original_image(image_path: str) -> torch.Tensor | None:
    """Return the in-memory image of a pseudo path as float ``(3, H, W)`` in ``[0, 1]``, else ``None``."""
    parts = str(image_path).split("/")
    if len(parts) < 5:
        return None
    reference = _STORES.get("/".join(parts[:-2]))
    store = reference() if reference is not None else None
    stem = parts[-1].split(".")[0]
    if store is None or not stem.isdigit() or int(stem) >= len(store):
        return None
    return store.images[int(stem)].to(torch.float32).div(255.0).expand(3, -1, -1)


def in_memory_item(item: Any) -> Any:
    """``item`` with the in-memory picture as ``image`` and no path if it has a pseudo path; else ``item``."""
    if isinstance(item, OneVsRestImageItem) and item.image_path:
        image = original_image(item.image_path)
        if image is not None:
            return item.update(in_place=False, image=image, image_path=None)
    return item
