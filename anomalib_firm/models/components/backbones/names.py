"""The one resolver of backbone names, for every model: which library builds a name, and which architecture.

:func:`~anomalib_firm.models.components.backbones.encoders.build_encoder` (FIRM, MCL: trained from scratch)
and :func:`~anomalib_firm.models.components.backbones.pretrained.build_pretrained_backbone` (MSC: ImageNet
weights) both read names here, so a name means the same network everywhere:

* ``resnet18_cifar``, ``resnet34_cifar``: our ResNets with the CIFAR stem (no pretrained weights).
* ``efficientnet_lite0``: EfficientNet-Lite0 as the official TensorFlow release defines it (TF
  "SAME" padding, BatchNorm eps 1e-3, ReLU6), built with timm's ``tf_efficientnet_lite0``.
* Torchvision ResNet-family names (``resnet18`` ... ``resnet152``, ``resnext*``, ``wide_resnet*``,
  ``regnet_*``), plain or as ``torchvision:<name>`` / ``tv:<name>``.
* Any timm model: ``timm:<name>`` (tags allowed, ``timm:resnet50.a1_in1k``), or the plain name
  when torchvision has no ResNet-family model of that name. ``timm:resnet18`` is timm's ResNet-18,
  ``timm:efficientnet_lite0`` timm's own PyTorch-trained variant (symmetric padding).

Imports torchvision and timm only when a name has to be looked up in them.
"""

from __future__ import annotations

from typing import Literal

from anomalib_firm.console import InputError

BackboneSource = Literal["cifar", "efficientnet_lite0", "torchvision", "timm"]

#: Blocks per stage of the CIFAR-stem ResNets (:class:`.encoders.CifarResNet`).
CIFAR_RESNETS: dict[str, tuple[int, int, int, int]] = {
    "resnet18_cifar": (2, 2, 2, 2),
    "resnet34_cifar": (3, 4, 6, 3),
}

#: timm architecture that reproduces the TF reference of EfficientNet-Lite0 (SAME padding, BN eps 1e-3, ReLU6).
EFFICIENTNET_LITE0_TIMM = "tf_efficientnet_lite0"

_TORCHVISION_FAMILIES = ("resnet", "resnext", "wide_resnet", "regnet_")


def resolve_backbone_name(name: str) -> tuple[BackboneSource, str]:
    """Resolve a backbone name to the library that builds it and the architecture there.

    Args:
        name: See the module docstring.

    Returns:
        ``(source, architecture)``; for ``efficientnet_lite0`` the architecture is the timm one
        that is built, for the CIFAR ResNets the name itself.

    Raises:
        ValueError: If no library knows the name.
    """
    if name in CIFAR_RESNETS:
        return "cifar", name
    if name == "efficientnet_lite0":
        return "efficientnet_lite0", EFFICIENTNET_LITE0_TIMM
    prefix, sep, rest = name.partition(":")
    if sep and prefix in ("torchvision", "tv"):
        if not _is_torchvision_family(rest):
            msg = (
                f"Unsupported torchvision backbone {rest!r}: only ResNet-family models {_TORCHVISION_FAMILIES} "
                f"(pooled features before a single `fc` layer); use 'timm:<name>' for other networks."
            )
            raise InputError(msg)
        return "torchvision", rest
    if sep and prefix == "timm":
        if not _is_timm_model(rest):
            msg = f"Unknown timm model {rest!r} (from backbone name {name!r})."
            raise InputError(msg)
        return "timm", rest
    if sep:
        msg = f"Unknown backbone prefix {prefix!r} in {name!r}: use 'timm:', 'torchvision:' or 'tv:'."
        raise InputError(msg)
    if _is_torchvision_family(name):
        return "torchvision", name
    if _is_timm_model(name):
        return "timm", name
    msg = (
        f"Unknown backbone {name!r}: use {', '.join(map(repr, CIFAR_RESNETS))}, 'efficientnet_lite0', a torchvision "
        f"ResNet-family name (e.g. 'resnet18', 'resnet152') or a timm model name ('timm:<name>')."
    )
    raise InputError(msg)


def _is_torchvision_family(name: str) -> bool:
    from torchvision import models

    return name.startswith(_TORCHVISION_FAMILIES) and name in models.list_models(module=models)


def _is_timm_model(name: str) -> bool:
    import timm

    return bool(timm.is_model(name))
