"""The randomly initialised torchvision and timm networks behind backbone names, and what their weights expect.

Names are resolved by :mod:`.names` (shared with FIRM's and MCL's encoders). Nothing here reads a
weight file or downloads (except :func:`create_timm` with ``pretrained=True``, which
:mod:`.pretrained_weights` calls): building the network of a name is separate from loading it.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from anomalib_firm.models.components.backbones.names import resolve_backbone_name

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: BatchNorm settings of the TF reference: eps 1e-3, momentum 1 - 0.99 in PyTorch's convention.
EFFICIENTNET_LITE_BN = {"bn_eps": 1e-3, "bn_momentum": 0.01}
#: The TF EfficientNet-Lite input normalisation, (x - 127) / 128 on [0, 255], i.e. mean = std = 0.5 on [0, 1].
EFFICIENTNET_LITE_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def classifier_prefixes(model: nn.Module, source: str) -> tuple[str, ...]:
    """State-dict key prefixes of the network's classifier (``fc.`` for torchvision, timm's configured name)."""
    if source == "torchvision":
        return ("fc.",)
    classifier = getattr(model, "pretrained_cfg", {}).get("classifier", "classifier")
    names = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    return tuple(f"{name}." for name in names)


def create_torchvision(architecture: str) -> nn.Module:
    """A randomly initialised torchvision classification network (no download)."""
    from torchvision import models

    return models.get_model(architecture, weights=None)


def create_timm(architecture: str, pretrained: bool) -> nn.Module:
    """Create a timm model with its classifier, downloading its default weights if ``pretrained``."""
    import timm

    kwargs: dict[str, Any] = dict(EFFICIENTNET_LITE_BN) if architecture.startswith("tf_efficientnet_lite") else {}
    return timm.create_model(architecture, pretrained=pretrained, **kwargs)


def resolve_library_name(name: str) -> tuple[str, str, str]:
    """``(kind, architecture, library)`` of a backbone that torchvision or timm builds (not a CIFAR-stem ResNet)."""
    kind, architecture = resolve_backbone_name(name)
    if kind == "cifar":
        msg = (
            f"Backbone {name!r} is one of our CIFAR-stem ResNets, trained from scratch (FIRM, MCL): it has no "
            "pretrained weights. Use a torchvision, timm or 'efficientnet_lite0' name."
        )
        raise ValueError(msg)
    return kind, architecture, "torchvision" if kind == "torchvision" else "timm"


def create_network(name: str) -> tuple[nn.Module, str, str]:
    """The randomly initialised classification network of a backbone name: ``(model, kind, source)``."""
    kind, architecture, source = resolve_library_name(name)
    model = create_torchvision(architecture) if source == "torchvision" else create_timm(architecture, False)
    return model, kind, source


def headless_network(name: str) -> tuple[nn.Module, int]:
    """The randomly initialised torchvision / timm network of backbone ``name`` without its classifier.

    Returns:
        ``(network, D)``: the network maps (B, 3, H, W) to pooled features (B, D).
    """
    model, _, source = create_network(name)
    return model, remove_classifier(model, source)


def remove_classifier(model: nn.Module, source: str) -> int:
    """Replace the classifier of a torchvision / timm network by the identity, in place; return the feature dim."""
    if source == "torchvision":
        classifier = model.fc
        if not isinstance(classifier, nn.Linear):
            msg = f"Expected a torchvision network ending in a linear classifier 'fc', got {type(classifier).__name__}."
            raise TypeError(msg)
        model.fc = nn.Identity()
        return classifier.in_features
    model.reset_classifier(0)  # type: ignore[operator]  # every timm model has it
    return int(getattr(model, "head_hidden_size", None) or model.num_features)  # type: ignore[arg-type]  # timm: an int attribute


def native_mean_std(model: nn.Module, kind: str, pretrained: bool) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The input normalisation ``(mean, std)`` the network's weights expect (ImageNet's unless they say otherwise)."""
    if not pretrained:
        return IMAGENET_MEAN, IMAGENET_STD  # nothing learnt yet: the caller's convention is as good as any
    if kind == "efficientnet_lite0":
        return EFFICIENTNET_LITE_MEAN_STD
    if kind == "timm":
        config = getattr(model, "pretrained_cfg", {})
        return tuple(config.get("mean", IMAGENET_MEAN)), tuple(config.get("std", IMAGENET_STD))
    return IMAGENET_MEAN, IMAGENET_STD
