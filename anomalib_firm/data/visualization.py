"""An anomalib ``ImageVisualizer`` that also draws images existing only in memory.

anomalib's ``visualize_image_item`` takes the picture of an item from the file at
``item.image_path`` (falling back to ``item.image`` only when the path is ``None``), and
the visualizer names its output file after that same path. The in-memory datasets give
pseudo paths (``<dataset>/<category>/<split>/<class>/<index>.png``) that exist on no
disk, so the stock visualizer would fail in every test loop.

:class:`InMemoryImageVisualizer` is what our models configure by default (anomalib's
extension point, ``configure_visualizer``): for an item whose path is a pseudo path
registered by a data set (:func:`register_store`), the original image is taken from the
split's in-memory tensor (exactly what a file would have held) and the pseudo path still
names the saved file; other items are drawn and saved as anomalib's visualizer does. Nothing
of anomalib is replaced. Another anomalib model tested on our data modules needs it too:
``--model.visualizer anomalib_firm.data.visualization.InMemoryImageVisualizer`` (or ``false``).
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from anomalib.data import ImageBatch  # first: anomalib.visualization imported before anomalib.data is circular
from anomalib.utils.path import generate_output_filename
from anomalib.visualization import ImageVisualizer

from anomalib_firm.data.batch import OneVsRestImageItem

if TYPE_CHECKING:
    from lightning.pytorch import LightningModule, Trainer

    from anomalib_firm.data.base import ImageStore

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


class InMemoryImageVisualizer(ImageVisualizer):
    """anomalib's :class:`ImageVisualizer` (same options), drawing in-memory images from memory.

    Test and prediction batches go to anomalib's own loop unless they hold in-memory items; then
    each item is drawn with :meth:`ImageVisualizer.visualize` from its in-memory picture and saved
    where anomalib's loop would have saved it (the file named after the item's pseudo path).
    """

    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: ImageBatch,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Draw and save every item of ``batch`` (anomalib's ``on_predict_batch_end`` calls this too)."""
        drawable = [in_memory_item(item) for item in batch]
        if all(item.image_path is not None for item in drawable):  # nothing in memory: anomalib's own loop
            super().on_test_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
            return
        if self.output_dir is None:
            self.output_dir = Path(trainer.default_root_dir) / "images"
        datamodule = getattr(trainer, "datamodule", None)
        for item, drawn in zip(batch, drawable, strict=True):
            picture = self.visualize(drawn)
            if picture is not None:
                filename = generate_output_filename(
                    input_path=item.image_path or "",
                    output_path=self.output_dir,
                    dataset_name=getattr(datamodule, "name", None),
                    category=getattr(datamodule, "category", None),
                )
                picture.save(filename)
