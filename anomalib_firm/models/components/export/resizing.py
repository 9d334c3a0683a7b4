"""The one resize between an image and our models, the same in training, predict and every export.

anomalib's ``PreProcessor`` resizes with its ``transform`` in the Trainer's callbacks (fit,
validate, test, predict) but puts ``get_exportable_transform(transform)`` into exported graphs, and
that function turns antialiasing off (ONNX has no antialiased resize: PyTorch's exporter refuses
``aten::_upsample_bilinear2d_aa`` at opsets 17 and 18). An antialiased ``Resize`` in the
pre-processor therefore gave an image larger than ``image_size`` one score from ``anomalib
predict`` and another from the exported model (0.268 against 0.298 for one 32 px image). Our models resize
bilinearly without antialiasing everywhere, so both paths compute the same input.
"""

from __future__ import annotations

import torch
from anomalib.pre_processing import PreProcessor
from torch.nn import functional as F
from torchvision.transforms.v2 import Resize

#: Bilinear resizing antialiases only when this is true; false because exported graphs cannot.
ANTIALIAS = False


def model_pre_processor(image_size: tuple[int, int]) -> PreProcessor:
    """Anomalib's pre-processor with our one resize (normalisation is part of the torch model)."""
    return PreProcessor(transform=Resize(image_size, antialias=ANTIALIAS))


def resize_like_the_model(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(N, C, H, W)`` float images -> ``(N, C, *size)``, resized as the pre-processor and exports do."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=tuple(size), mode="bilinear", align_corners=False, antialias=ANTIALIAS)
