"""Lets anomalib's ``ImageVisualizer`` draw images that exist only in memory.

anomalib's ``visualize_image_item`` takes the picture of an item from the file at
``item.image_path`` (falling back to ``item.image`` only when the path is ``None``), and
the visualizer names its output file after that same path. The in-memory datasets give
pseudo paths (``<dataset>/<category>/<split>/<class>/<index>.png``) that exist on no
disk, so the stock visualizer would fail in every test loop.

:func:`install` wraps the ``visualize_image_item`` that ``ImageVisualizer`` calls, once:
for an item of our :class:`~anomalib_firm.data.batch.OneVsRestImageItem` whose path is a
registered pseudo path, the original image is taken from the split's in-memory tensor
(exactly what a file would have held) and the pseudo path still names the saved file.
Any other item goes to anomalib's function unchanged.
"""

from __future__ import annotations

import functools
import logging
import weakref
from typing import TYPE_CHECKING, Any

import torch

from anomalib_firm.data.batch import OneVsRestImageItem

if TYPE_CHECKING:
    from collections.abc import Callable

    from anomalib_firm.data.base import ImageStore

logger = logging.getLogger(__name__)

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


def _in_memory_aware(visualize: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(visualize)
    def visualize_image_item(item: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(item, OneVsRestImageItem) and item.image_path:
            image = original_image(item.image_path)
            if image is not None:
                item = item.update(in_place=False, image=image, image_path=None)
        return visualize(item, *args, **kwargs)

    visualize_image_item._anomalib_firm_in_memory = True  # type: ignore[attr-defined]
    return visualize_image_item


def install() -> None:
    """Wrap the ``visualize_image_item`` used by anomalib's ``ImageVisualizer`` (once; later calls do nothing)."""
    from anomalib.visualization.image import visualizer

    if getattr(visualizer.visualize_image_item, "_anomalib_firm_in_memory", False):
        return
    visualizer.visualize_image_item = _in_memory_aware(visualizer.visualize_image_item)
    logger.debug("anomalib's ImageVisualizer now draws in-memory images of the one-vs-rest data modules.")
