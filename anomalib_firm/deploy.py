"""Inference with an exported FIRM / MSC / MCL model: anomalib's ``OpenVINOInferencer`` with two fixes.

``from anomalib_firm.deploy import OpenVINOInferencer`` is anomalib's inferencer (same arguments,
same results) except:

- **precision**: the models' scores (k-NN cosines of a bank of near-identical normal images,
  Mahalanobis distances) differ in the third decimal, finer than bf16 resolves. On CPUs with bf16
  (AVX-512 BF16, AMX) OpenVINO computes in bf16 by default and GPUs in f16. Measured with the
  quick start's digits model on the 901 Digits test images (AVX-512 BF16 CPU): normalised scores
  moved by up to 0.012 and 2 labels flipped (one anomalous image went from 0.553 to 0.481,
  across the 0.5 threshold). This inferencer compiles with
  ``INFERENCE_PRECISION_HINT: f32`` (:data:`SCORE_PRECISION`) on ``CPU``, ``GPU`` and ``AUTO``
  unless ``config`` names a precision. OpenVINO (2026.4) cannot carry this in the IR: its CPU
  plugin ignores ``INFERENCE_PRECISION_HINT`` and ``EXECUTION_MODE_HINT`` under the model's
  ``runtime_options`` rt_info (it honours only cache and quantisation options there), and marking
  the graph's nodes to keep f32 leaves the nodes its own transformations create in bf16 (scores
  still off by 0.006). With anomalib's inferencer pass the same ``config`` yourself;
- **image size**: an IR exported with ``--input_size "[H,W]"`` takes only ``H x W`` images
  (OpenVINO refuses others with a shape error). This inferencer resizes other sizes to ``H x W``
  first, as the exported graph's pre-processor does (bilinear, not antialiased: anomalib's
  exportable transform), so the scores are those of the dynamic export; with ``resize=False`` it
  raises a ``ValueError`` saying what to do instead. A dynamic IR (exported without
  ``--input_size``, the default) takes any size and resizes inside;
- **one image, one score**: for one image (a path, a PIL image, an ``(H, W, C)`` array or a
  ``(C, H, W)`` tensor) ``predict`` returns that image's ``NumpyImageItem``, whose ``pred_score``
  is a 0-d array (``float(result.pred_score)`` works); for a batch, anomalib's ``NumpyImageBatch``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from anomalib.deploy import OpenVINOInferencer as AnomalibOpenVINOInferencer

from anomalib_firm.models.components.export.resizing import resize_like_the_model

logger = logging.getLogger(__name__)

#: The OpenVINO precision the scores need: set unless the caller's ``config`` names one.
SCORE_PRECISION = {"INFERENCE_PRECISION_HINT": "f32"}
#: Devices that take :data:`SCORE_PRECISION` (AUTO passes it to the device it picks).
PRECISION_DEVICES = ("CPU", "GPU", "AUTO")


def static_input_size(partial_shape: Any) -> tuple[int, int] | None:
    """``(H, W)`` of an NCHW OpenVINO input shape with static spatial dimensions, else ``None``."""
    if len(partial_shape) != 4 or not (partial_shape[2].is_static and partial_shape[3].is_static):
        return None
    return partial_shape[2].get_length(), partial_shape[3].get_length()


class OpenVINOInferencer(AnomalibOpenVINOInferencer):
    """anomalib's ``OpenVINOInferencer`` computing in f32 and taking images of any size (see the module docstring).

    Args:
        path: The exported ``model.xml`` (or ``.bin`` / ``.onnx``, or the bytes), as anomalib's.
        device: OpenVINO device, as anomalib's (default ``"AUTO"``).
        config: OpenVINO properties; :data:`SCORE_PRECISION` is added for CPU/GPU/AUTO unless it
            sets ``INFERENCE_PRECISION_HINT`` (or ``EXECUTION_MODE_HINT``) itself.
        resize: For an IR with a fixed input size, resize images of another size to it (``True``)
            or raise a ``ValueError`` (``False``).
    """

    def __init__(
        self,
        path: str | Path | tuple[bytes, bytes],
        device: str | None = "AUTO",
        config: dict | None = None,
        resize: bool = True,
    ) -> None:
        config = dict(config or {})
        wants_f32 = (device or "AUTO").split(":")[0].split(".")[0].upper() in PRECISION_DEVICES
        if wants_f32 and not {"INFERENCE_PRECISION_HINT", "EXECUTION_MODE_HINT"} & set(config):
            config.update(SCORE_PRECISION)
        self.resize = resize
        super().__init__(path, device=device, config=config)
        self.input_size = static_input_size(self.input_blob.get_partial_shape())

    def predict(self, image: Any) -> Any:
        """Predict as anomalib does; for one image, its item (scalar ``pred_score``) instead of a batch of one."""
        predictions = super().predict(image)
        one_image = not isinstance(image, np.ndarray | torch.Tensor) or image.ndim == 3
        return next(iter(predictions)) if one_image and len(predictions) == 1 else predictions

    def pre_process(self, image: np.ndarray) -> np.ndarray:  # type: ignore[override]  # anomalib's is a static method
        """As anomalib's pre-processing (float ``(N, 3, H, W)`` in [0, 1]), then the IR's fixed size if it has one."""
        image = AnomalibOpenVINOInferencer.pre_process(image)
        if self.input_size is None or tuple(image.shape[-2:]) == self.input_size:
            return image
        if not self.resize:
            height, width = self.input_size
            msg = (
                f"This model was exported with a fixed input size of {height}x{width} pixels (--input_size) and the "
                f"image is {image.shape[-2]}x{image.shape[-1]}: resize it to {height}x{width} first, use "
                "OpenVINOInferencer(..., resize=True) to resize it as the model's pre-processor does, or export "
                "without --input_size (the exported model then takes any size)."
            )
            raise ValueError(msg)
        resized = resize_like_the_model(
            torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)), self.input_size
        )
        return resized.numpy()


def log_fixed_input_size(input_size: tuple[int, int]) -> None:
    """Log, when ``--input_size`` fixes the exported model's input size, what that means for inference."""
    height, width = input_size
    logger.info(
        f"The exported model takes images of exactly {height}x{width} pixels (--input_size): anomalib's "
        "OpenVINOInferencer fails with a shape error on other sizes, anomalib_firm.deploy.OpenVINOInferencer resizes "
        "them; exported without --input_size, the model takes any size."
    )
