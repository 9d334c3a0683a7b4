"""Loading pretrained weights into a backbone network: the only place that reads weight files or downloads.

What a ``weights`` value means is documented in :mod:`.pretrained` (the builder users call).
Weight files are read and the EfficientNet-Lite keys mapped by :mod:`.weight_files`; the help text
for missing weights is :mod:`.offline_help`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from anomalib_firm.console import InputError, UnavailableInputError
from anomalib_firm.models.components.backbones.networks import (
    classifier_prefixes,
    create_network,
    create_timm,
    native_mean_std,
    resolve_library_name,
)
from anomalib_firm.models.components.backbones.offline_help import missing_package_message, missing_weights_message
from anomalib_firm.models.components.backbones.weight_files import (
    EFFICIENTNET_LITE0_PACKAGE,
    convert_efficientnet_lite_state_dict,
    find_efficientnet_lite0_weights,
    is_efficientnet_lite_package_format,
    load_state_dict_file,
    strip_prefix,
)

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

_RANDOM_WEIGHTS = ("random", "none")
_WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")
#: Modules whose exceptions mean "the download did not work" (checked by name, nothing imported).
_NETWORK_MODULES = frozenset({"requests", "urllib3", "httpx", "httpcore", "huggingface_hub", "urllib", "socket"})


class PretrainedWeightsUnavailableError(UnavailableInputError):
    """Raised when ImageNet weights were asked for but can be neither downloaded nor found locally."""


def _load_into(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str, origin: str) -> None:
    """Load ``state_dict`` strictly except for classifier keys the model does not have."""
    if is_efficientnet_lite_package_format(state_dict):
        state_dict = convert_efficientnet_lite_state_dict(state_dict, model)
    own = model.state_dict()
    if not any(key in own for key in state_dict) and all(key.startswith("body.") for key in state_dict):
        state_dict = {strip_prefix(key, "body."): value for key, value in state_dict.items()}  # PretrainedBackbone
    classifier = classifier_prefixes(model, source)
    extra = [key for key in state_dict if key not in own]
    unexpected = [key for key in extra if not key.startswith(classifier)]
    missing = [key for key in own if key not in state_dict and not key.startswith(classifier)]
    shared = [key for key in own if key in state_dict]
    # A classifier with another number of classes is dropped: only the features are used.
    fitting = {key: state_dict[key] for key in shared if state_dict[key].shape == own[key].shape}
    wrong_shape = [
        f"{key}: {tuple(state_dict[key].shape)} vs {tuple(own[key].shape)}"
        for key in shared
        if key not in fitting and not key.startswith(classifier)
    ]
    if unexpected or missing or wrong_shape:
        msg = (
            f"Weights from {origin} do not fit this network: missing {missing[:5]} ({len(missing)}), "
            f"unexpected {unexpected[:5]} ({len(unexpected)}), wrong shape {wrong_shape[:5]} ({len(wrong_shape)})."
        )
        raise ValueError(msg)
    model.load_state_dict(fitting, strict=False)


def _torchvision_weights_enum(architecture: str, member: str) -> WeightsEnum:
    from torchvision import models

    enum = models.get_model_weights(architecture)
    if member == "imagenet":
        member = "IMAGENET1K_V1" if "IMAGENET1K_V1" in enum.__members__ else "DEFAULT"
    return enum[member] if member != "DEFAULT" else enum.DEFAULT


def _download_torchvision_state_dict(weights_enum: WeightsEnum) -> Mapping[str, torch.Tensor]:
    """Fetch a torchvision weights enum's state dict (torch hub cache first, then the internet)."""
    return weights_enum.get_state_dict(progress=True, check_hash=True)


def _is_download_error(error: BaseException) -> bool:
    return isinstance(error, OSError) or type(error).__module__.split(".")[0] in _NETWORK_MODULES


def _looks_like_path(weights: str | os.PathLike[str]) -> bool:
    if isinstance(weights, os.PathLike):
        return True
    return weights.endswith(_WEIGHT_SUFFIXES) or os.sep in weights or "/" in weights or Path(weights).is_file()


def is_random(weights: str | os.PathLike[str] | None) -> bool:
    """True for the ``weights`` values that mean random initialisation (``None``, ``"random"``, ``"none"``)."""
    return weights is None or (isinstance(weights, str) and weights.lower() in _RANDOM_WEIGHTS)


def load_pretrained_weights(model: nn.Module, name: str, weights: str | os.PathLike[str] | None) -> None:
    """Load the weights a ``weights`` value names into a network of backbone ``name``, in place.

    The only function here that reads weight files or downloads: :func:`build_pretrained_backbone`
    with ``load_weights=False`` leaves the call to :meth:`PretrainedBackbone.load_pretrained_weights`
    (MSC makes it when training starts, so a model restored from a checkpoint never fetches anything).

    Args:
        model: The network as built for ``name`` (with or without its classifier: classifier
            weights that the network does not have are skipped).
        name: Backbone name (see the module docstring).
        weights: ``"imagenet"``, ``"efficientnet-lite0-package"``, a torchvision weights member name
            (``"IMAGENET1K_V2"``, ``"DEFAULT"``), a file path, or ``None``/``"random"`` (nothing is
            loaded; warns, MSC needs pretraining).

    Raises:
        ValueError: For an unknown weights value, or a file that does not fit.
        FileNotFoundError: For a path that does not exist.
        PretrainedWeightsUnavailableError: If ImageNet weights can be neither downloaded nor found.
    """
    kind, architecture, source = resolve_library_name(name)

    if is_random(weights):
        warnings.warn(
            f"Backbone {name!r} is randomly initialised: MSC needs ImageNet pretraining (its mean-shifted loss "
            f"starts from the pretrained feature space and collapses without it). Pass weights='imagenet' or a file.",
            UserWarning,
            stacklevel=3,
        )
        return

    if isinstance(weights, str) and weights == EFFICIENTNET_LITE0_PACKAGE:
        check_weights_value(name, kind, weights)
        weights = _require_efficientnet_lite0_package()

    if _looks_like_path(weights):  # type: ignore[arg-type]  # None was handled above
        _load_into(model, load_state_dict_file(weights), source, origin=str(weights))  # type: ignore[arg-type]  # None was handled above
        return

    weights = str(weights)
    if source == "torchvision":
        try:
            weights_enum = _torchvision_weights_enum(architecture, weights)
        except KeyError:
            msg = f"Unknown weights {weights!r} for {name!r}: use 'imagenet', a torchvision member name, a path, None."
            raise InputError(msg) from None
        try:
            state_dict = _download_torchvision_state_dict(weights_enum)
        except Exception as error:
            if not _is_download_error(error):
                raise
            raise PretrainedWeightsUnavailableError(
                missing_weights_message(name, kind, architecture, error, url=weights_enum.url)
            ) from error
        _load_into(model, state_dict, source, origin=weights_enum.url)
        return

    if weights != "imagenet":
        msg = f"Unknown weights {weights!r} for {name!r}: use 'imagenet', a file path or None."
        raise InputError(msg)
    package_file = find_efficientnet_lite0_weights() if kind == "efficientnet_lite0" else None
    if package_file is not None:  # the same ImageNet weights, installed: no download (and no retries offline)
        _load_into(model, load_state_dict_file(package_file), source, origin=str(package_file))
        return
    try:
        state_dict = create_timm(architecture, True).state_dict()
    except Exception as error:
        if not _is_download_error(error):
            raise
        raise PretrainedWeightsUnavailableError(missing_weights_message(name, kind, architecture, error)) from error
    _load_into(model, state_dict, source, origin=f"timm's ImageNet weights of {architecture!r}")


def check_weights_value(name: str, kind: str, weights: str | os.PathLike[str] | None) -> None:
    """Reject a ``weights`` value that can never fit ``name`` (a pure check: no file, no network)."""
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        msg = f"weights must be a string, a path or None, got {type(weights).__name__} ({weights!r})."
        raise TypeError(msg)
    if weights == EFFICIENTNET_LITE0_PACKAGE and kind != "efficientnet_lite0":
        msg = f"weights={EFFICIENTNET_LITE0_PACKAGE!r} holds EfficientNet-Lite0 weights, not {name!r}."
        raise InputError(msg)


def create_pretrained_model(
    name: str, weights: str | os.PathLike[str] | None = "imagenet"
) -> tuple[nn.Module, str, tuple[tuple[float, ...], tuple[float, ...]]]:
    """Build the full classification network of a backbone name with the requested weights.

    The network of :func:`build_pretrained_backbone` before its classifier is removed; public so
    that ImageNet predictions of loaded weights can be checked. Loads at once (see
    :func:`load_pretrained_weights`).

    Args:
        name: Backbone name (see the module docstring).
        weights: ``"imagenet"``, ``"efficientnet-lite0-package"``, a torchvision weights member name
            (``"IMAGENET1K_V2"``, ``"DEFAULT"``), a file path, or ``None``/``"random"`` (warns).

    Returns:
        ``(model, source, (mean, std))``: the network with its classifier, the library it comes from
        (``"torchvision"`` or ``"timm"``), and the input normalisation its weights expect.

    Raises:
        ValueError: For an unknown name or weights value, or a file that does not fit.
        FileNotFoundError: For a path that does not exist.
        PretrainedWeightsUnavailableError: If ImageNet weights can be neither downloaded nor found.
    """
    model, kind, source = create_network(name)
    check_weights_value(name, kind, weights)
    load_pretrained_weights(model, name, weights)
    return model, source, native_mean_std(model, kind, pretrained=not is_random(weights))


def _require_efficientnet_lite0_package() -> Path:
    path = find_efficientnet_lite0_weights()
    if path is None:
        raise PretrainedWeightsUnavailableError(missing_package_message())
    return path
