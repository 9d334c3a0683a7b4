"""tools/_accuracy_references.py: anomalib's models on the offline Lite0 weights, and our models before training."""

from __future__ import annotations

import pytest
import torch
from tool_utils import imported_tool

from anomalib_firm.data import Digits
from anomalib_firm.models.components.backbones.pretrained import build_pretrained_backbone


@pytest.fixture(scope="module")
def tool():
    with imported_tool("_accuracy_references") as module:
        yield module


@pytest.fixture(scope="module")
def datamodule() -> Digits:
    digits = Digits(category=2, train_batch_size=32, eval_batch_size=128, num_workers=0)
    digits.setup()
    return digits


def test_every_anomalib_model_gets_the_package_weights(tool):
    reference, _ = build_pretrained_backbone("efficientnet_lite0", "efficientnet-lite0-package")
    expected = reference.body.state_dict()
    for name, build in tool.peer_models(whole_class=False).items():
        model = build()
        extractor = model.model.feature_extractor.feature_extractor
        assert tool.load_lite0_into(model) > 100, name
        for key, value in extractor.state_dict().items():
            torch.testing.assert_close(value, expected[key], atol=0, rtol=0, msg=f"{name}: {key}")


def test_an_extractor_of_another_network_is_refused(tool):
    from anomalib.models import Padim

    model = Padim(backbone="resnet18", layers=["layer1"], pre_trained=False, n_features=10, visualizer=False)
    with pytest.raises(RuntimeError, match="'resnet18', not 'efficientnet_lite0'"):
        tool.load_lite0_into(model)


def test_peer_and_starting_rows_score_real_data(tool, datamodule, tmp_path):
    padim = next(build for name, build in tool.peer_models(whole_class=False).items() if name.startswith("PaDiM"))
    first = tool.peer_auroc(padim, datamodule, tmp_path, seed=0)
    assert 0.8 < first <= 1.0  # digit 2 against the others
    assert tool.peer_auroc(padim, datamodule, tmp_path, seed=0) == first  # its random channel subset is seeded
    from model_utils import tiny_model

    torch.manual_seed(0)
    assert 0.6 < tool.starting_auroc(tiny_model("firm", bn_recalibration=False), datamodule) <= 1.0


def test_large_allocations_are_memory_mapped_on_glibc(tool):
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    assert tool.map_large_allocations() is True
