"""Compressed OpenVINO export (FP16, INT8, INT8_PTQ, INT8_ACQ) with the scorer kept in floating point."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from anomalib.deploy import OpenVINOInferencer
from anomalib.deploy.export import CompressionType
from anomalib.engine import Engine
from model_utils import IMAGE_SIZE, tiny_model
from sklearn.metrics import roc_auc_score
from torchvision.transforms.v2 import functional as TF

from anomalib_firm.data import Digits
from anomalib_firm.models.components.export.compression import scorer_operations


def test_scorer_operations_are_the_knn_and_the_feature_path_not_the_layers():
    import openvino as ov
    from openvino import opset13 as ops

    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(8, 16, generator=generator)
    bank = torch.nn.functional.normalize(torch.randn(20, 16, generator=generator), dim=-1)
    images = ops.parameter([-1, 8], np.float32, name="images")
    layer = ops.matmul(images, ops.constant(weight.numpy()), False, False, name="layer")
    activation = ops.relu(layer, name="activation")
    norm = ops.reduce_l2(activation, ops.constant(np.array([1])), True, name="norm")
    normalised = ops.divide(activation, norm, name="normalised")
    # The exporter folds the bank's transpose: the constant holds the bank's values in another layout.
    similarity = ops.matmul(normalised, ops.constant(bank.T.contiguous().numpy()), False, False, name="similarity")
    top = ops.topk(similarity, ops.constant(np.int64(3)), axis=1, mode="max", sort="value", name="top")
    score = ops.reduce_mean(top.output(0), ops.constant(np.array([1])), False, name="score")
    model = ov.Model([score], [images])

    names = set(scorer_operations(model, [bank]))

    assert {"similarity", "top", "score", "normalised", "norm", "activation"} <= names
    assert "layer" not in names  # the network's layer stays quantisable
    assert scorer_operations(model, [torch.randn(20, 16, generator=generator)]) == []  # other values: no scorer


def test_a_half_precision_bank_is_found_after_the_exporter_normalised_it():
    import openvino as ov
    from openvino import opset13 as ops

    from anomalib_firm.models.components.export.compression import scorer_statistics
    from anomalib_firm.models.components.scoring.feature_bank import BankCompaction, FeatureBank

    generator = torch.Generator().manual_seed(0)
    bank = FeatureBank(1, 16)
    bank.update(torch.randn(1, 20, 16, generator=generator), BankCompaction(precision="float16"))
    folded = torch.nn.functional.normalize(bank.features[0].float(), dim=-1)  # what the exporter folds
    queries = ops.parameter([-1, 16], np.float32, name="queries")
    similarity = ops.matmul(queries, ops.constant(folded.T.contiguous().numpy()), False, False, name="similarity")
    model = ov.Model([similarity], [queries])
    assert scorer_operations(model, [bank.features]) == []  # the stored float16 values alone do not match
    assert scorer_operations(model, scorer_statistics(bank)) == ["similarity"]


@pytest.fixture(scope="module")
def fitted_firm(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[torch.nn.Module, Digits, np.ndarray, np.ndarray, float, Path]:
    """A small FIRM (untrained, BatchNorm recalibrated) fitted on digit 0, its test images, labels, torch AUROC
    and its ONNX export (made once: the ONNX export itself is tested with the fp32 exports)."""
    datamodule = Digits(category="0", num_workers=0)
    datamodule.setup()
    torch.manual_seed(0)
    model = tiny_model("firm", bn_recalibration=True, post_processor=False, evaluator=False).eval()
    model.fit_scorer_from_loader(datamodule.train_dataloader())
    onnx = model.to_onnx(tmp_path_factory.mktemp("onnx"), input_size=(IMAGE_SIZE, IMAGE_SIZE))
    images = torch.cat([torch.Tensor.as_subclass(batch.image, torch.Tensor) for batch in datamodule.test_dataloader()])
    images = TF.resize(images, [IMAGE_SIZE, IMAGE_SIZE], antialias=True)
    labels = np.concatenate([np.asarray(batch.gt_label) for batch in datamodule.test_dataloader()])
    with torch.no_grad():
        reference = model(images).pred_score.numpy()
    return model, datamodule, images.numpy(), reference, float(roc_auc_score(labels, reference)), onnx


@pytest.mark.parametrize("compression", list(CompressionType))
def test_compressed_export_scores_like_the_torch_model(compression, fitted_firm, tmp_path, monkeypatch):
    model, datamodule, images, reference, torch_auroc, onnx = fitted_firm
    monkeypatch.chdir(tmp_path)  # OpenVINOInferencer writes ./openvino_cache
    # The same ONNX graph each time (OpenVINO conversion, compression and saving run for real).
    monkeypatch.setattr(model, "to_onnx", lambda *args, **kwargs: onnx)
    engine = Engine(default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    xml = engine.export(  # what `anomalib export --export_type openvino --compression_type ...` calls
        model,
        export_type="openvino",
        export_root=tmp_path,
        input_size=(IMAGE_SIZE, IMAGE_SIZE),
        compression_type=compression,
        datamodule=datamodule,
        **({"metric": _auroc_metric(), "max_drop": 0.02} if compression == CompressionType.INT8_ACQ else {}),
    )
    assert xml is not None
    assert Path(xml).exists()
    inferencer = OpenVINOInferencer(xml, device="CPU", config={"INFERENCE_PRECISION_HINT": "f32"})
    scores = np.concatenate(
        [inferencer.predict(images[i : i + 128]).pred_score.reshape(-1) for i in range(0, len(images), 128)]
    )
    labels = np.concatenate([np.asarray(batch.gt_label) for batch in datamodule.test_dataloader()])
    assert abs(roc_auc_score(labels, scores) - torch_auroc) < 0.02
    if compression == CompressionType.FP16:  # half-precision weights only: the scores move little
        assert np.abs(scores - reference).max() < 0.02 * (reference.max() - reference.min())


def _auroc_metric() -> object:
    from anomalib.metrics import AUROC

    return AUROC(fields=["pred_score", "gt_label"])
