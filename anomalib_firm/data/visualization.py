"""An anomalib ``ImageVisualizer`` that also draws images existing only in memory.

anomalib's ``visualize_image_item`` takes the picture of an item from the file at
``item.image_path`` (falling back to ``item.image`` only when the path is ``None``), and
the visualizer names its output file after that same path. The in-memory datasets give
pseudo paths (``<dataset>/<category>/<split>/<class>/<index>.png``) that exist on no
disk, so the stock visualizer would fail in every test loop.

:class:`InMemoryImageVisualizer` is what our models configure by default (anomalib's
extension point, ``configure_visualizer``): for an item whose path is a pseudo path
registered by a data set (:func:`~anomalib_firm.data.image_store.register_store`), the original image is taken from the
split's in-memory tensor (exactly what a file would have held) and the pseudo path still
names the saved file; other items are drawn and saved as anomalib's visualizer does. Nothing
of anomalib is replaced. Another anomalib model tested on our data modules needs it too:
``--model.visualizer anomalib_firm.data.visualization.InMemoryImageVisualizer`` (or ``false``).

Image-level models give no anomaly map and no mask: anomalib's default overlays (image + anomaly
map, image + predicted mask) then draw the input again, twice, with nothing on it, and anomalib
2.7's pictures carry no score. This visualizer leaves out an overlay none of whose fields the item
has, and writes the prediction under the picture: the predicted label, the score (normalised by
the post-processor: the threshold is 0.5) and the ground truth where it is known
(``show_prediction``, on by default).
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anomalib.data import ImageBatch  # first: anomalib.visualization imported before anomalib.data is circular
from anomalib.utils.path import generate_output_filename
from anomalib.visualization import ImageVisualizer
from anomalib.visualization.image.item_visualizer import visualize_image_item
from PIL import Image

from anomalib_firm.data.image_store import in_memory_item
from anomalib_firm.data.labels import prediction_caption

if TYPE_CHECKING:
    from lightning.pytorch import LightningModule, Trainer


@functools.lru_cache(maxsize=64)
def _font(path: str | None, size: int) -> Any:
    """The font anomalib's text drawing uses (``path``, else PIL's default) at ``size``; loaded once."""
    from PIL import ImageFont

    if path:
        with contextlib.suppress(OSError):
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size=size)


@functools.lru_cache(maxsize=256)
def _text_width(text: str, font_path: str | None, size: int) -> float:
    """Width in pixels of ``text`` in :func:`_font` (measuring costs about a millisecond: cached)."""
    from PIL import ImageDraw

    return ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(text, font=_font(font_path, size))


def with_caption(picture: Image.Image, caption: str, text_config: dict[str, Any]) -> Image.Image:
    """``picture`` with a black strip below holding ``caption`` (``text_config``'s font and colour; shrunk to fit)."""
    from PIL import ImageDraw

    font_path = text_config.get("font")
    size = text_config.get("size") or max(10, min(24, picture.height // 12))
    template = "".join("0" if character.isdigit() else character for character in caption)  # one width per layout
    while size > 8 and _text_width(template, font_path, size) > picture.width - 16:
        size -= 1
    framed = Image.new("RGB", (picture.width, picture.height + size + 14))
    framed.paste(picture, (0, 0))
    color = text_config.get("color", "white")
    ImageDraw.Draw(framed).text((8, picture.height + 6), caption, font=_font(font_path, size), fill=color)
    return framed


class InMemoryImageVisualizer(ImageVisualizer):
    """anomalib's :class:`ImageVisualizer` (same options), drawing in-memory images from memory, with the prediction.

    Each test and prediction item is drawn with anomalib's ``visualize_image_item`` (from its
    in-memory picture when it has a pseudo path), without the overlays whose fields the item lacks,
    with the prediction written under it (``show_prediction``), and saved where anomalib's loop
    saves it (the file named after the item's path).

    Args:
        show_prediction: Write the predicted label, the score and the ground truth (when known)
            under each picture.
        *args, **kwargs: anomalib's :class:`ImageVisualizer` options.
    """

    def __init__(self, *args: Any, show_prediction: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.show_prediction = show_prediction

    def draw(self, item: Any) -> Image.Image | None:
        """The picture of one item (anomalib's drawing, overlays of missing fields left out, prediction below)."""
        drawable = in_memory_item(item)
        overlays = [
            (base, fields)
            for base, fields in self.overlay_fields
            if any(getattr(drawable, field, None) is not None for field in fields)
        ]
        picture = visualize_image_item(
            drawable,
            fields=self.fields,
            overlay_fields=overlays,
            field_size=self.field_size,
            fields_config=self.fields_config,
            overlay_fields_config=self.overlay_fields_config,
            text_config=self.text_config,
        )
        caption = prediction_caption(item) if self.show_prediction else None
        if picture is not None and caption is not None:
            picture = with_caption(picture, caption, self.text_config)
        return picture

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
        del pl_module, outputs, batch_idx, dataloader_idx
        if self.output_dir is None:
            self.output_dir = Path(trainer.default_root_dir) / "images"
        datamodule = getattr(trainer, "datamodule", None)
        for item in batch:
            picture = self.draw(item)
            if picture is not None:
                filename = generate_output_filename(
                    input_path=item.image_path or "",
                    output_path=self.output_dir,
                    dataset_name=getattr(datamodule, "name", None),
                    category=getattr(datamodule, "category", None),
                )
                picture.save(filename)
