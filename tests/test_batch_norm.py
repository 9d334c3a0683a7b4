"""BatchNorm: FIRM uses the authors' momentum 0.9, MCL keeps PyTorch's 0.1; bad values named; recalibration modes."""

from __future__ import annotations

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from anomalib_firm.models import Firm, Mcl
from anomalib_firm.models.components.backbones.batch_norm import set_batchnorm_momentum
from anomalib_firm.models.components.lifecycle.scorer_fitting import CALIBRATION_PASSES


def _momenta(module: torch.nn.Module) -> set[float | None]:
    return {layer.momentum for layer in module.modules() if isinstance(layer, _BatchNorm)}


def test_firm_default_is_the_authors_momentum() -> None:
    model = Firm(image_size=16, head_hidden_dim=16, head_layers=3, visualizer=False)
    assert _momenta(model.model) == {0.9}


def test_momentum_none_keeps_pytorch_default() -> None:
    firm = Firm(image_size=16, head_hidden_dim=16, head_layers=3, bn_momentum=None, visualizer=False)
    mcl = Mcl(image_size=16, backbone="resnet18_cifar", head_hidden_dim=16, visualizer=False)
    assert _momenta(firm.model) == {0.1}
    assert _momenta(mcl.model) == {0.1}


def test_running_statistics_follow_the_latest_batch() -> None:
    layer = torch.nn.BatchNorm1d(2)
    assert set_batchnorm_momentum(layer, 0.9) == 1
    layer(torch.tensor([[10.0, -4.0], [12.0, -6.0]]))
    torch.testing.assert_close(layer.running_mean, torch.tensor([9.9, -4.5]))


@pytest.mark.parametrize("momentum", [0.0, 1.5, -0.1])
def test_bad_momentum_is_named(momentum: float) -> None:
    with pytest.raises(ValueError, match="bn_momentum"):
        Firm(image_size=16, head_hidden_dim=16, head_layers=3, bn_momentum=momentum, visualizer=False)


class _Batch:
    def __init__(self, image: torch.Tensor) -> None:
        self.image = image


def test_recalibration_gives_the_statistics_of_the_current_weights() -> None:
    torch.manual_seed(0)
    model = Firm(image_size=16, head_hidden_dim=16, head_layers=3, bn_recalibration="normal_images", visualizer=False)
    images = torch.rand(6, 3, 16, 16)
    # Reference: one train-mode pass with momentum 1 over the same images leaves their batch statistics.
    reference = Firm(image_size=16, head_hidden_dim=16, head_layers=3, bn_momentum=1.0, visualizer=False)
    reference.load_state_dict(model.state_dict())
    reference.model.train()
    with torch.no_grad():
        reference.model.rotation_features(images)

    head_before = model.model.head.layers[1].running_mean.clone()
    assert model.recalibrate_batchnorm([_Batch(images)]) > 0
    encoder_bn = model.model.encoder.bn1
    torch.testing.assert_close(encoder_bn.running_mean, reference.model.encoder.bn1.running_mean)
    torch.testing.assert_close(encoder_bn.running_var, reference.model.encoder.bn1.running_var)
    torch.testing.assert_close(
        model.model.encoder.layer4[1].bn2.running_var, reference.model.encoder.layer4[1].bn2.running_var
    )
    assert encoder_bn.momentum == 0.9  # restored
    torch.testing.assert_close(model.model.head.layers[1].running_mean, head_before)  # head: not on the scoring path
    assert model.model.training  # mode restored


def test_training_view_recalibration_averages_seeded_training_views_of_the_current_weights() -> None:
    torch.manual_seed(0)
    kwargs = {"image_size": 16, "head_hidden_dim": 16, "head_layers": 3, "mixed_precision": False}
    model = Firm(**kwargs, bn_recalibration="training_views", visualizer=False)
    images = torch.rand(6, 3, 16, 16)
    # Reference: the training forward path (encoder and head) in train mode, cumulative statistics over
    # CALIBRATION_PASSES passes of training views drawn from seed 0 (6 images: far below CALIBRATION_VIEWS).
    reference = Firm(**kwargs, visualizer=False)
    reference.load_state_dict(model.state_dict())
    for layer in reference.model.modules():
        if isinstance(layer, _BatchNorm):
            layer.momentum = None
            layer.reset_running_stats()
    reference.model.train()
    torch.manual_seed(0)
    with torch.no_grad():
        for _ in range(CALIBRATION_PASSES):
            reference.model.embed(reference.training_views(images))

    torch.manual_seed(123)
    random_state = torch.get_rng_state()
    model.recalibrate_batchnorm([_Batch(images)])
    assert torch.equal(torch.get_rng_state(), random_state)  # training's random stream untouched
    for name in ("encoder.bn1", "encoder.layer4.1.bn2", "head.layers.1"):
        torch.testing.assert_close(
            model.model.get_submodule(name).running_var, reference.model.get_submodule(name).running_var
        )
    first = model.model.encoder.bn1.running_mean.clone()
    model.recalibrate_batchnorm([_Batch(images)])
    assert torch.equal(model.model.encoder.bn1.running_mean, first)  # same views every fit


def test_recalibration_option_values() -> None:
    assert Firm(image_size=16, bn_recalibration=True, visualizer=False).bn_recalibration == "normal_images"
    assert Mcl(image_size=16, bn_recalibration=False, visualizer=False).bn_recalibration is False
    with pytest.raises(ValueError, match="bn_recalibration='views'"):
        Firm(image_size=16, bn_recalibration="views", visualizer=False)  # type: ignore[arg-type]
