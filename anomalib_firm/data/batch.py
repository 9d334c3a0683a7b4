"""Items and batches that also carry the class of each image among the normal classes.

anomalib's :class:`~anomalib.data.ImageBatch` knows only the binary ``gt_label``. Models
trained on several normal classes at once (multi-class one-vs-rest) also need *which*
normal class an image belongs to, so these dataclasses add one field:

- ``class_label``: index of the image's class in the data module's ``normal_classes``
  (``0..C-1``), or ``-1`` for an image of any other class. Shape ``()`` on an item,
  ``(B,)`` on a batch, dtype ``int64``.

Lightning moves dataclasses to the model's device by re-creating them from their
fields, so the extra field reaches ``training_step`` on the right device. The item
classes accept pseudo paths of in-memory images (``image_path`` need not exist on disk).

Example:
    >>> import torch
    >>> from anomalib_firm.data.batch import OneVsRestImageBatch
    >>> batch = OneVsRestImageBatch(
    ...     image=torch.rand(2, 3, 8, 8),
    ...     gt_label=torch.tensor([0, 1]),
    ...     class_label=torch.tensor([0, -1]),
    ...     image_path=["Digits/0/test/0/00000.png", "Digits/0/test/7/00001.png"],
    ... )
    >>> [item.class_label.item() for item in batch]
    [0, -1]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from anomalib.data.dataclasses.numpy.image import NumpyImageBatch, NumpyImageItem
from anomalib.data.dataclasses.torch.image import ImageBatch, ImageItem


def _path_as_string(image_path: str | None) -> str | None:
    """``validate_image_path`` of the items: the path as a string, which need not exist (in-memory images)."""
    return str(image_path) if image_path else None


@dataclass
class NumpyOneVsRestImageItem(NumpyImageItem):
    """Numpy image item with the class of the image among the normal classes.

    Args:
        class_label (np.ndarray | None): Index of the image's class in the normal classes,
            ``-1`` for other classes.
    """

    class_label: np.ndarray | None = None

    validate_image_path = staticmethod(_path_as_string)


@dataclass
class NumpyOneVsRestImageBatch(NumpyImageBatch):
    """Numpy image batch with ``class_label`` of shape ``(B,)``."""

    item_class: ClassVar[type[NumpyImageItem]] = NumpyOneVsRestImageItem

    class_label: np.ndarray | None = None


@dataclass
class OneVsRestImageItem(ImageItem):
    """Image item with the class of the image among the normal classes.

    Args:
        class_label (torch.Tensor | None): Scalar ``int64`` tensor: index of the image's
            class in the normal classes, ``-1`` for other classes.
    """

    numpy_class: ClassVar[type[NumpyImageItem]] = NumpyOneVsRestImageItem

    class_label: torch.Tensor | None = None

    validate_image_path = staticmethod(_path_as_string)


@dataclass
class OneVsRestImageBatch(ImageBatch):
    """Image batch with ``class_label`` (``int64``, shape ``(B,)``) for multi-class training."""

    item_class: ClassVar[type[ImageItem]] = OneVsRestImageItem
    numpy_class: ClassVar[type[NumpyImageBatch]] = NumpyOneVsRestImageBatch

    class_label: torch.Tensor | None = None
