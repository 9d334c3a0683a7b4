"""FIRM and MCL from pretrained weights: the ``weights`` option gives their encoder the offline Lite0 weights.

The weights are loaded when training or a scorer fit starts (as MSC's), into an encoder that still
trains every layer, and never into a network restored from a checkpoint; the papers' random
initialisation stays the default. A pretrained encoder keeps its BatchNorm statistics by default
(``freeze_batchnorm``, MSC's rule), and its scorer then fits with them as they are.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from model_utils import short_fit_engine

from anomalib_firm.console import InputError
from anomalib_firm.data import Digits
from anomalib_firm.models import Firm, Mcl
from anomalib_firm.models.components.backbones.pretrained import PretrainedBackbone, build_pretrained_backbone

PACKAGE = "efficientnet-lite0-package"
SMALL = {"image_size": 16, "head_hidden_dim": 64, "visualizer": False, "bn_recalibration": False}


@pytest.fixture(scope="module")
def package_stem() -> torch.Tensor:
    """The first convolution of the package's network, loaded by MSC's path."""
    backbone, _ = build_pretrained_backbone("efficientnet_lite0", PACKAGE)
    return backbone.body.conv_stem.weight.detach().clone()


def _stem(model: Firm | Mcl) -> torch.Tensor:
    return model.model.encoder.body.conv_stem.weight


@pytest.mark.parametrize("model_class", [Firm, Mcl])
def test_scorer_fit_loads_the_weights_into_a_trainable_encoder(model_class, package_stem):
    torch.manual_seed(0)
    model = model_class(backbone="efficientnet_lite0", weights=PACKAGE, **SMALL)
    encoder = model.model.encoder
    assert isinstance(encoder, PretrainedBackbone)
    assert not torch.equal(_stem(model), package_stem)  # built without reading the file
    datamodule = Digits(category=1, train_batch_size=32, num_workers=0)
    datamodule.setup()
    model.fit_scorer_from_loader(datamodule.train_dataloader())
    torch.testing.assert_close(_stem(model), package_stem, atol=0, rtol=0)
    assert all(parameter.requires_grad for parameter in encoder.parameters())
    model.train()
    assert not any(layer.training for layer in _batchnorm_layers(model))  # frozen by default


def _batchnorm_layers(model: Firm | Mcl) -> list[torch.nn.BatchNorm2d]:
    return [layer for layer in model.model.encoder.modules() if isinstance(layer, torch.nn.BatchNorm2d)]


def _statistics(model: Firm | Mcl) -> list[torch.Tensor]:
    return [buffer.clone() for layer in _batchnorm_layers(model) for buffer in (layer.running_mean, layer.running_var)]


@pytest.mark.parametrize("model_class", [Firm, Mcl])
def test_pretrained_batchnorm_statistics_survive_training_and_scorer_fits(model_class):
    torch.manual_seed(0)
    options = {key: value for key, value in SMALL.items() if key != "bn_recalibration"}
    model = model_class(backbone="efficientnet_lite0", weights=PACKAGE, **options)
    assert model.bn_recalibration is False  # recomputing would replace the pretrained statistics
    model.load_pretrained_weights()
    pretrained = _statistics(model)
    datamodule = Digits(category=1, train_batch_size=32, num_workers=0)
    datamodule.setup()
    model.train()
    images = next(iter(datamodule.train_dataloader())).image
    loss, _ = model.training_loss(images, None)
    loss.backward()
    model.fit_scorer_from_loader(datamodule.train_dataloader())
    for before, after in zip(pretrained, _statistics(model), strict=True):
        torch.testing.assert_close(after, before, atol=0, rtol=0)

    trained = model_class(backbone="efficientnet_lite0", weights=PACKAGE, freeze_batchnorm=False, **options)
    assert trained.bn_recalibration == "training_views"
    trained.load_pretrained_weights()
    trained.train()
    assert all(layer.training for layer in _batchnorm_layers(trained))
    trained.training_loss(images, None)
    assert any(not torch.equal(before, after) for before, after in zip(pretrained, _statistics(trained), strict=True))


@pytest.mark.parametrize("model_class", [Firm, Mcl])
def test_a_fit_with_frozen_batchnorm_says_nothing_about_modules_in_eval_mode(model_class, tmp_path):
    """Lightning notes modules in eval mode as training starts; frozen BatchNorm layers are, on purpose.

    The note is silenced for that check only (as MSC's): the filter is gone again after the fit.
    """
    torch.manual_seed(0)
    model = model_class(backbone="efficientnet_lite0", weights=PACKAGE, **SMALL | {"bn_recalibration": None})
    engine = short_fit_engine(tmp_path, train_batches=1)
    filters_before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        filters_inside = list(warnings.filters)
        engine.fit(model, datamodule=Digits(category=1, train_batch_size=16, num_workers=0))
        assert warnings.filters == filters_inside
    assert warnings.filters == filters_before
    assert model.global_step == 1
    assert not [w for w in caught if "in eval mode" in str(w.message)]


@pytest.mark.parametrize("model_class", [Firm, Mcl])
def test_batchnorm_options_that_contradict_each_other_are_clear_errors(model_class):
    options = {key: value for key, value in SMALL.items() if key != "bn_recalibration"}
    assert model_class(**options).bn_recalibration == "training_views"  # from scratch: statistics train
    pretrained = {"backbone": "efficientnet_lite0", "weights": PACKAGE, **options}
    with pytest.raises(InputError, match="bn_recalibration='training_views' would replace the pretrained"):
        model_class(freeze_batchnorm=True, bn_recalibration="training_views", **pretrained)
    # A recalibration asked for without freeze_batchnorm (every checkpoint from before the option): trained.
    recalibrated = model_class(bn_recalibration="training_views", **pretrained)
    assert recalibrated.hparams["freeze_batchnorm"] is False
    assert recalibrated.model.encoder.bn_eval is False
    with pytest.raises(InputError, match="freeze_batchnorm=True keeps pretrained BatchNorm statistics, but weights="):
        model_class(freeze_batchnorm=True, **options)


@pytest.mark.parametrize("model_class", [Firm, Mcl])
def test_a_restored_network_keeps_its_weights(model_class, package_stem):
    torch.manual_seed(0)
    trained = model_class(backbone="efficientnet_lite0", weights=PACKAGE, **SMALL)
    trained.load_pretrained_weights()
    with torch.no_grad():
        _stem(trained).mul_(2)  # as training would change it
    restored = model_class(backbone="efficientnet_lite0", weights=PACKAGE, **SMALL)
    restored.load_state_dict(trained.state_dict())
    assert restored.load_pretrained_weights() is False
    torch.testing.assert_close(_stem(restored), 2 * package_stem, atol=0, rtol=0)


def test_random_initialisation_stays_the_default():
    model = Firm(**SMALL)
    assert not isinstance(model.model.encoder, PretrainedBackbone)
    assert model.load_pretrained_weights() is False


@pytest.mark.parametrize("model_class", [Firm, Mcl])
def test_pretrained_weights_for_a_cifar_stem_are_a_clear_error(model_class):
    with pytest.raises(InputError, match="no pretrained weights for the CIFAR-stem backbone 'resnet18_cifar'"):
        model_class(backbone="resnet18_cifar", weights=PACKAGE, **SMALL)


LITE0_LOWER_BLOCKS = ["conv_stem", "bn1", "blocks.0", "blocks.1", "blocks.2", "blocks.3", "blocks.4"]


@pytest.mark.parametrize("model_class", [Firm, Mcl])
def test_frozen_modules_keep_their_loaded_weights_through_training(model_class, package_stem, tmp_path):
    """A real fit: the named blocks keep the package's weights, the others train, the optimiser holds the latter."""
    torch.manual_seed(0)
    model = model_class(
        backbone="efficientnet_lite0", weights=PACKAGE, frozen_modules=LITE0_LOWER_BLOCKS, lr=0.5, **SMALL
    )
    body = model.model.encoder.body
    assert not any(
        parameter.requires_grad for name in LITE0_LOWER_BLOCKS for parameter in body.get_submodule(name).parameters()
    )
    engine = short_fit_engine(tmp_path, train_batches=2)
    reference, _ = build_pretrained_backbone("efficientnet_lite0", PACKAGE)
    engine.fit(model, datamodule=Digits(category=1, train_batch_size=16, num_workers=0))
    assert model.global_step == 2
    torch.testing.assert_close(_stem(model), package_stem, atol=0, rtol=0)
    torch.testing.assert_close(body.blocks[4].state_dict(), reference.body.blocks[4].state_dict(), atol=0, rtol=0)
    assert not torch.equal(body.blocks[6][0].conv_pw.weight, reference.body.blocks[6][0].conv_pw.weight)
    (optimizer,) = engine.trainer.optimizers
    held = {id(parameter) for group in optimizer.param_groups for parameter in group["params"]}
    trainable = {id(parameter) for parameter in model.model.parameters() if parameter.requires_grad}
    assert held == trainable
    assert len(trainable) < len(list(model.model.parameters()))


@pytest.mark.parametrize("model_class", [Firm, Mcl])
def test_frozen_modules_from_scratch_and_unknown_names(model_class):
    model = model_class(frozen_modules=["conv1", "bn1", "layer1"], **SMALL)
    encoder = model.model.encoder
    assert not any(parameter.requires_grad for parameter in encoder.layer1.parameters())
    assert all(parameter.requires_grad for parameter in encoder.layer2.parameters())
    assert model_class(**SMALL).hparams["frozen_modules"] is None  # every layer trains by default
    with pytest.raises(InputError, match="Cannot freeze 'blocks.9'"):
        model_class(backbone="efficientnet_lite0", weights=PACKAGE, frozen_modules=["blocks.9"], **SMALL)
