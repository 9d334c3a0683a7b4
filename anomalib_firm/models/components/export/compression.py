"""Compressed OpenVINO export (``--compression_type FP16|INT8|INT8_PTQ|INT8_ACQ``) that keeps the scorer exact.

anomalib compresses an exported OpenVINO model with NNCF: ``INT8`` quantises the weights,
``INT8_PTQ`` weights and activations (calibrated on images), ``INT8_ACQ`` the same under an
accuracy budget. Our exported graphs contain the scorer as well as the network: the bank of
normal features of FIRM and MSC is the right-hand side of a ``MatMul`` (the k-NN similarities
and distances) and MCL's Gaussians are the operands of the Mahalanobis terms. Quantising them
would round the statistics the score is made of to 256 levels (the nearest neighbours of a
normal image differ in the third decimal of the cosine), so every operation fed by a scorer
statistic, down to the score, is kept in floating point (an NNCF ignored scope); the network
in front of it is compressed as anomalib does.

The calibration images are the data module's normal *training* images (anomalib's default
reads the validation split), resized to the exported input size; accuracy-controlled
quantisation validates on the validation split (anomalib's default reads the test split). The
test split is never read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from anomalib.data import ImageBatch
from anomalib.deploy.export import CompressionType
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Subset

from anomalib_firm.console import COMPRESSION_LOG_LEVELS, InputError, logger_levels
from anomalib_firm.models.components.export.resizing import resize_like_the_model
from anomalib_firm.models.components.lifecycle.contract import LifecycleHost
from anomalib_firm.models.components.scoring.feature_bank import FeatureBank
from anomalib_firm.models.components.scoring.gaussian_scorer import ClassRotationGaussians

if TYPE_CHECKING:
    import openvino as ov
    from anomalib.data import AnomalibDataModule
    from torchmetrics import Metric

logger = logging.getLogger(__name__)

#: Normal training images the activation ranges of ``INT8_PTQ`` / ``INT8_ACQ`` are calibrated on
#: (anomalib's recommendation: at least 300), spread evenly over the training set.
CALIBRATION_IMAGES = 300
#: Module types whose floating-point buffers are scorer statistics.
SCORER_MODULES: tuple[type[nn.Module], ...] = (FeatureBank, ClassRotationGaussians)


def scorer_statistics(model: nn.Module) -> list[torch.Tensor]:
    """The floating-point buffers of every scorer module in ``model`` (banks, Gaussian means and precisions).

    Each also L2-normalised along its last dimension in float32, as the cosine k-NN uses a bank and
    the exporter folds it: for a float16 bank the folded values differ from the stored ones by
    float16 rounding, far more than the tolerance of :func:`scorer_operations`.
    """
    buffers = [
        buffer.detach()
        for module in model.modules()
        if isinstance(module, SCORER_MODULES)
        for buffer in module.buffers(recurse=False)
        if buffer.is_floating_point() and buffer.numel() > 0
    ]
    return [*buffers, *(F.normalize(buffer.float(), dim=-1) for buffer in buffers if buffer.ndim >= 2)]


def _holds_statistics(values: np.ndarray, sorted_statistics: np.ndarray, rtol: float = 1e-5) -> bool:
    """True when every value is (to ``rtol``) one of the statistics' values: a constant taken from them."""
    index = np.clip(np.searchsorted(sorted_statistics, values), 1, len(sorted_statistics) - 1)
    nearest = np.minimum(np.abs(sorted_statistics[index] - values), np.abs(sorted_statistics[index - 1] - values))
    return bool(np.all(nearest <= rtol * np.abs(values) + 1e-7))


#: Operation types that are network layers (when one operand is a constant weight): where the walk back stops.
_LAYER_TYPES = frozenset(
    {"Convolution", "GroupConvolution", "MatMul", "ConvolutionBackpropData", "GroupConvolutionBackpropData"}
)


def _is_constant(node: Any) -> bool:
    """A constant, or a constant's decompression (``Convert`` of a constant, as in half-precision IRs)."""
    if node.get_type_name() == "Convert":
        node = node.input_value(0).get_node()
    return node.get_type_name() == "Constant"


def _is_layer(node: Any) -> bool:
    """A convolution or matrix product with a constant weight operand: a layer of the network."""
    return node.get_type_name() in _LAYER_TYPES and any(_is_constant(port.get_node()) for port in node.input_values())


def scorer_operations(ov_model: ov.Model, statistics: Iterable[torch.Tensor], min_size: int = 16) -> list[str]:
    """Names of the operations of an OpenVINO model that make the score from the network's features.

    Two parts:

    * every operation a scorer statistic feeds, directly or not, down to the outputs (the k-NN
      products, top-k, Mahalanobis terms, the score and its post-processing). The statistics reach
      the graph as constants, possibly folded by the exporter (a normalised bank, the Gaussians of
      each view gathered, a transposed copy): a constant is a scorer constant when it has at least
      ``min_size`` values and each of them is one of the statistics' values;
    * the operations that bring the network's output to them (pooling, reshapes, L2
      normalisation): walking back from the first part to the network's last layers
      (convolutions and matrix products with constant weights, which stay quantisable) and the
      input, not through shape computations. Left quantisable, the features themselves would
      be rounded to 256 levels before the k-NN (measured on digits: FIRM's AUROC 0.998 -> 0.787).

    Constants, shape computations and results are not listed.
    """
    tensors = [tensor.float().cpu().numpy().ravel() for tensor in statistics]
    if not tensors:
        return []
    sorted_statistics = np.unique(np.concatenate(tensors))
    if len(sorted_statistics) < 2:
        return []
    seeds = []
    for operation in ov_model.get_ordered_ops():
        if operation.get_type_name() != "Constant" or not operation.get_output_element_type(0).is_real():
            continue
        values = operation.get_data().astype(np.float32).ravel()
        if values.size >= min_size and _holds_statistics(values, sorted_statistics):
            seeds.append(operation)
    scorer: dict[str, Any] = {}
    stack = [target.get_node() for seed in seeds for target in seed.output(0).get_target_inputs()]
    while stack:
        node = stack.pop()
        name = node.get_friendly_name()
        if name in scorer or node.get_type_name() in ("Result", "Constant"):
            continue
        scorer[name] = node
        stack.extend(target.get_node() for output in node.outputs() for target in output.get_target_inputs())
    feature_path: dict[str, None] = {}
    stack = [port.get_node() for node in scorer.values() for port in node.input_values()]
    while stack:
        node = stack.pop()
        name = node.get_friendly_name()
        if name in scorer or name in feature_path or _is_constant(node) or _is_layer(node):
            continue
        if node.get_type_name() in ("Parameter", "ShapeOf", "Convert"):
            continue
        feature_path[name] = None
        stack.extend(port.get_node() for port in node.input_values())
    return [*scorer, *feature_path]


def _input_size(ov_model: ov.Model) -> tuple[int, int] | None:
    """Static ``(H, W)`` of the model's image input, or ``None`` when the spatial size is dynamic."""
    shape = ov_model.input(0).get_partial_shape()
    if len(shape) == 4 and shape[2].is_static and shape[3].is_static:
        return shape[2].get_length(), shape[3].get_length()
    return None


def _resized(images: torch.Tensor, size: tuple[int, int] | None) -> np.ndarray:
    """A batch of images as the exported model's float32 input (resized when the input size is static)."""
    images = torch.Tensor.as_subclass(images, torch.Tensor).float()
    if size is not None and tuple(images.shape[-2:]) != size:
        images = resize_like_the_model(images, size)
    return images.contiguous().numpy()


def calibration_batches(datamodule: AnomalibDataModule, size: tuple[int, int] | None) -> list[np.ndarray]:
    """Up to :data:`CALIBRATION_IMAGES` normal training images, evenly spaced, as model inputs in batches."""
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    dataset = loader.dataset
    count = min(CALIBRATION_IMAGES, len(dataset))
    if count < CALIBRATION_IMAGES:
        logger.warning("Calibrating INT8 quantisation on %d normal training images (300 recommended).", count)
    indices = np.linspace(0, len(dataset) - 1, count).round().astype(int).tolist()
    subset = DataLoader(Subset(dataset, indices), batch_size=32, shuffle=False, collate_fn=loader.collate_fn)
    return [_resized(batch.image, size) for batch in subset]


def _validation_batches(datamodule: AnomalibDataModule, size: tuple[int, int] | None) -> list[tuple[Any, Any]]:
    """The validation split (images resized as model inputs, labels) for accuracy-controlled quantisation."""
    datamodule.setup("fit")
    if getattr(datamodule, "val_data", None) is None or len(datamodule.val_data) == 0:
        msg = (
            "INT8_ACQ needs a validation split with normal and anomalous images to measure the accuracy "
            "drop (the test split is never used): give the data module a val_split_mode."
        )
        raise ValueError(msg)
    return [(_resized(batch.image, size), torch.as_tensor(batch.gt_label)) for batch in datamodule.val_dataloader()]


class ScorerPreservingExportMixin(LifecycleHost):
    """Quiet ONNX export, and anomalib's NNCF step of ``to_openvino`` for models whose graph ends in a scorer.

    Put before anomalib's ``ExportMixin`` in the bases (the models' mixin does). ``FP16`` is
    anomalib's (weights and scorer statistics stored in half precision, computed in the
    runtime's precision); ``INT8``, ``INT8_PTQ`` and ``INT8_ACQ`` leave the operations
    :func:`scorer_operations` finds in floating point.
    """

    def to_onnx(  # type: ignore[override]  # as anomalib's ExportMixin.to_onnx, which already differs from Lightning's
        self,
        export_root: Path | str,
        model_file_name: str = "model",
        input_size: tuple[int, int] | None = None,
        **kwargs: Any,
    ) -> Path:
        """ONNX export as anomalib's (also the first step of ``to_openvino``), quiet unless something fails.

        Exports at opset 18, the dynamo exporter's own (anomalib asks for 14, which the exporter
        cannot reach for these graphs: it logged a failed conversion with a traceback and kept 18),
        without the exporter's progress prints and INFO logs (:func:`anomalib_firm.console.quiet_export`).
        Both defaults yield to ``opset_version`` / ``verbose`` in ``kwargs``. A fixed ``input_size`` is
        logged with what it means for inference (:func:`anomalib_firm.deploy.log_fixed_input_size`).
        """
        from anomalib_firm.console import quiet_export

        kwargs.setdefault("opset_version", 18)
        kwargs.setdefault("verbose", False)
        if input_size is not None:
            from anomalib_firm.deploy import log_fixed_input_size

            log_fixed_input_size(input_size)
        with quiet_export():
            return super().to_onnx(export_root, model_file_name, input_size, **kwargs)

    def to_openvino(
        self,
        export_root: Path | str,
        model_file_name: str = "model",
        input_size: tuple[int, int] | None = None,
        compression_type: CompressionType | None = None,
        datamodule: AnomalibDataModule | None = None,
        metric: Metric | None = None,
        task: Any = None,
        max_drop: float = 0.01,
        ov_kwargs: dict[str, Any] | None = None,
        onnx_kwargs: dict[str, Any] | None = None,
    ) -> Path:
        """Export to OpenVINO as anomalib does; a compressed model is named after its compression.

        ``--compression_type INT8_PTQ`` writes ``model_int8_ptq.xml``, ``FP16`` ``model_fp16.xml``.

        With one name for every compression, an ``INT8_PTQ`` export replaced the full-precision one
        in the same folder.
        """
        if compression_type is not None and model_file_name == "model":
            model_file_name = f"model_{CompressionType(compression_type).value}"
        return super().to_openvino(
            export_root,
            model_file_name,
            input_size,
            compression_type,
            datamodule=datamodule,
            metric=metric,
            task=task,
            max_drop=max_drop,
            ov_kwargs=ov_kwargs,
            onnx_kwargs=onnx_kwargs,
        )

    def _compress_ov_model(
        self,
        model: ov.Model,
        compression_type: CompressionType | None = None,
        datamodule: AnomalibDataModule | None = None,
        metric: Metric | None = None,
        task: Any = None,
        max_drop: float = 0.01,
    ) -> ov.Model:
        """Compress with NNCF, the scorer kept in floating point (see the module docstring)."""
        del task
        with logger_levels(COMPRESSION_LOG_LEVELS):
            import nncf  # noqa: F401  (importing NNCF sets its logger's level: ours is applied after)
        with logger_levels(COMPRESSION_LOG_LEVELS):
            return self._compress_quietly(model, compression_type, datamodule, metric, max_drop)

    def _compress_quietly(
        self,
        model: ov.Model,
        compression_type: CompressionType | None,
        datamodule: AnomalibDataModule | None,
        metric: Metric | None,
        max_drop: float,
    ) -> ov.Model:
        """:meth:`_compress_ov_model`'s work, under its log levels."""
        import nncf

        ignored = scorer_operations(model, scorer_statistics(self.model))
        if not ignored:
            logger.warning("No scorer statistics found in the exported graph: the whole graph is quantised.")
        scope = nncf.IgnoredScope(names=ignored, validate=False)
        if compression_type == CompressionType.INT8:
            return nncf.compress_weights(model, ignored_scope=scope)
        if compression_type not in (CompressionType.INT8_PTQ, CompressionType.INT8_ACQ):
            msg = f"Unrecognized compression type: {compression_type}"
            raise InputError(msg)
        if datamodule is None:
            msg = f"{compression_type.name} needs a data module with normal training images to calibrate on (--data)."
            raise InputError(msg)
        size = _input_size(model)
        calibration = calibration_batches(datamodule, size)
        dataset = nncf.Dataset(calibration)
        if compression_type == CompressionType.INT8_PTQ:
            return nncf.quantize(model, dataset, subset_size=len(calibration), ignored_scope=scope)
        if not 0 <= max_drop <= 1:
            msg = f"max_drop must be between 0 and 1, got {max_drop}"
            raise InputError(msg)
        validation = _validation_batches(datamodule, size)
        return nncf.quantize_with_accuracy_control(
            model,
            dataset,
            nncf.Dataset(validation),
            _validation_function(metric),
            max_drop=max_drop,
            subset_size=len(calibration),
            ignored_scope=scope,
        )


def _validation_function(metric: Metric | None) -> Any:
    """NNCF's validation function: ``metric`` (default: image AUROC) over the validation batches, reset each call."""
    if metric is None:
        from anomalib.metrics import AUROC

        metric = AUROC(fields=["pred_score", "gt_label"])

    def validate(compiled: Any, batches: Iterable[tuple[np.ndarray, torch.Tensor]]) -> float:
        metric.reset()
        for images, labels in batches:
            outputs = {name: value for port, value in compiled(images).items() for name in port.names}
            fields = {
                name: torch.from_numpy(np.asarray(outputs[name])).reshape(-1)
                for name in ("pred_score", "pred_label")
                if name in outputs
            }
            metric.update(
                ImageBatch(
                    image=torch.from_numpy(images),
                    gt_label=labels,
                    pred_score=fields.get("pred_score"),
                    pred_label=fields.get("pred_label"),
                )
            )
        return float(metric.compute())

    return validate
