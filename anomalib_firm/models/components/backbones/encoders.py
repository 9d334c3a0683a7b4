"""Encoders: ResNets with the CIFAR stem, and any timm/torchvision network by name (randomly initialised).

The CIFAR stem (3x3 stride-1 first convolution, no max-pool) keeps a 32x32 input at 32x32
in the first stage; it is what FIRM and MCL train from scratch on small images.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from anomalib_firm.console import InputError
from anomalib_firm.models.components.backbones.freezing import freeze_modules
from anomalib_firm.models.components.backbones.names import CIFAR_RESNETS, resolve_backbone_name
from anomalib_firm.models.components.backbones.networks import headless_network
from anomalib_firm.models.components.backbones.pretrained import PretrainedBackbone, build_pretrained_backbone


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34 block)."""

    expansion = 1

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Map (B, C_in, H, W) to (B, C_out, H / stride, W / stride)."""
        out = self.relu(self.bn1(self.conv1(inputs)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(inputs))


class CifarResNet(nn.Module):
    """ResNet with the CIFAR stem; returns the globally average-pooled features (B, 512).

    Args:
        blocks_per_stage: Number of :class:`BasicBlock` per stage: (2, 2, 2, 2) is ResNet-18,
            (3, 4, 6, 3) is ResNet-34.
        in_channels: Input channels.
    """

    def __init__(self, blocks_per_stage: tuple[int, int, int, int], in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        widths = (64, 128, 256, 512)
        stages = []
        channels = 64
        for stage_index, (width, num_blocks) in enumerate(zip(widths, blocks_per_stage, strict=True)):
            stride = 1 if stage_index == 0 else 2
            blocks = [BasicBlock(channels, width, stride)]
            blocks += [BasicBlock(width, width) for _ in range(num_blocks - 1)]
            stages.append(nn.Sequential(*blocks))
            channels = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = channels
        self._init_weights()

    def _init_weights(self) -> None:
        """Kaiming fan-out initialisation, as the reference ResNets."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Map normalised images (B, C, H, W) to pooled features (B, 512)."""
        out = self.relu(self.bn1(self.conv1(images)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return torch.flatten(self.pool(out), 1)


def has_pretrained_weights(weights: str | None) -> bool:
    """Whether the ``weights`` option names pretrained weights (``None`` and ``"random"``: random initialisation)."""
    return weights is not None and weights != "random"


def build_encoder(
    name: str,
    weights: str | None = None,
    input_mean: tuple[float, float, float] = (0.0, 0.0, 0.0),
    input_std: tuple[float, float, float] = (1.0, 1.0, 1.0),
    freeze_batchnorm: bool = False,
    frozen_modules: Sequence[str] = (),
) -> tuple[nn.Module, int]:
    """Build an encoder by name, randomly initialised or to be given pretrained weights; return it with its feature dim.

    Names are resolved as for every backbone (:mod:`.backbone_names`): a plain ResNet-family name
    such as ``resnet18`` is torchvision's network here too, as for MSC; ``timm:resnet18`` is timm's.

    Args:
        name: ``resnet18_cifar`` or ``resnet34_cifar`` (CIFAR stem), ``efficientnet_lite0``, a
            torchvision ResNet-family name or a timm model name, built without its classifier.
        weights: ``None`` or ``"random"``: random initialisation (FIRM's and MCL's papers). Otherwise
            what :func:`~.pretrained.build_pretrained_backbone` takes (``"efficientnet-lite0-package"``
            offline, ``"imagenet"``, a file): a :class:`~.pretrained.PretrainedBackbone` with every layer
            trained, whose weights are loaded by :func:`load_encoder_weights` (when training or a scorer
            fit starts, never into a network restored from a checkpoint).
        input_mean: Normalisation of the images the encoder is given (a pretrained encoder maps them
            onto its weights' own convention).
        input_std: See ``input_mean``.
        freeze_batchnorm: Keep a pretrained encoder's BatchNorm layers in eval mode, their pretrained
            statistics unchanged (MSC's rule); ``False``: they train and follow the batches.
        frozen_modules: Sub-modules of the network kept as built or loaded (``requires_grad_(False)``),
            by name: ``conv_stem``, ``bn1``, ``blocks.0`` ... for EfficientNet-Lite0, ``conv1``,
            ``layer1`` ... for ResNets (names relative to the network without its classifier).

    Returns:
        The encoder, mapping (B, 3, H, W) to (B, D), and D.

    Raises:
        InputError: Pretrained weights asked for a CIFAR-stem ResNet (there are none), or
            ``freeze_batchnorm`` without pretrained weights (random statistics are nothing to keep),
            or a name in ``frozen_modules`` that is no sub-module of the network.
    """
    source, _ = resolve_backbone_name(name)
    pretrained = has_pretrained_weights(weights)
    if freeze_batchnorm and not pretrained:
        msg = (
            f"freeze_batchnorm=True keeps pretrained BatchNorm statistics, but weights={weights!r} gives a "
            "randomly initialised encoder: give pretrained weights (e.g. 'efficientnet-lite0-package') "
            "or leave freeze_batchnorm unset."
        )
        raise InputError(msg)
    if pretrained:
        if source == "cifar":
            msg = (
                f"There are no pretrained weights for the CIFAR-stem backbone {name!r}: use backbone "
                "'efficientnet_lite0' (weights 'efficientnet-lite0-package', offline) or a torchvision/timm name."
            )
            raise InputError(msg)
        return build_pretrained_backbone(
            name,
            weights,
            frozen_modules=frozen_modules,
            bn_eval=freeze_batchnorm,
            input_mean=input_mean,
            input_std=input_std,
            load_weights=False,
        )
    encoder, feature_dim = cifar_encoder(name) if source == "cifar" else headless_network(name)
    freeze_modules(encoder, frozen_modules)
    return encoder, feature_dim


def cifar_encoder(name: str) -> tuple[nn.Module, int]:
    """A randomly initialised CIFAR-stem ResNet (``resnet18_cifar``, ``resnet34_cifar``) and its feature dim."""
    encoder = CifarResNet(CIFAR_RESNETS[name])
    return encoder, encoder.feature_dim


def load_encoder_weights(encoder: nn.Module) -> bool:
    """Load a pretrained encoder's weights unless it holds weights already (a checkpoint's); True if it loaded now."""
    return isinstance(encoder, PretrainedBackbone) and encoder.load_pretrained_weights()
