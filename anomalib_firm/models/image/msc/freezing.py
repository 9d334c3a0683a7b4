"""MSC's rule for which layers of the pretrained network stay frozen (the paper's, and ours for EfficientNet-Lite0).

The generic freezing (``requires_grad_(False)`` by sub-module name) is
:meth:`~anomalib_firm.models.components.backbones.pretrained.PretrainedBackbone.freeze`; this module only
decides the names for MSC's ``frozen_modules="msc"``.
"""

from __future__ import annotations

from anomalib_firm.models.components.backbones.names import resolve_backbone_name

#: MSC's frozen sub-modules per backbone (names relative to the network, i.e. ``PretrainedBackbone.body``).
#: ResNet-152 (the paper): stem and the stride-4/8 stages frozen, layer3 and layer4 trained. ResNet-18 (the
#: paper's option): everything trained. Other ResNet-family networks follow ResNet-152. EfficientNet-Lite0
#: (our choice, the same cut by stride): the stem and the stride-2/4/8 stages (blocks 0-2) frozen; blocks 3-6
#: (stride 16 and 32) and the 1x1 head convolution trained: 98 % of the parameters, vs 96 % for ResNet-152.
MSC_FROZEN: dict[str, tuple[str, ...]] = {
    "resnet18": (),
    "efficientnet_lite0": ("conv_stem", "bn1", "blocks.0", "blocks.1", "blocks.2"),
}
MSC_FROZEN_RESNET = ("conv1", "bn1", "layer1", "layer2")


def msc_frozen_modules(name: str) -> tuple[str, ...]:
    """Return the sub-modules MSC keeps frozen for a backbone (names relative to :attr:`PretrainedBackbone.body`).

    ResNet-152 (the paper): ``conv1, bn1, layer1, layer2``; ResNet-18 (the paper's option): none;
    other ResNet-family networks: as ResNet-152; EfficientNet-Lite0 (our analogue, the same stride-8
    cut): ``conv_stem, bn1, blocks.0-2``, with blocks 3-6 and the head convolution trained.

    Args:
        name: Backbone name (see :mod:`~anomalib_firm.models.components.backbones.names`).

    Returns:
        The sub-module names.

    Raises:
        ValueError: For a backbone without a rule: pass the frozen modules explicitly.
    """
    kind, architecture = resolve_backbone_name(name)
    if kind == "efficientnet_lite0":
        return MSC_FROZEN["efficientnet_lite0"]
    base = architecture.split(".")[0]
    if base in MSC_FROZEN:
        return MSC_FROZEN[base]
    if kind != "cifar" and base.startswith(("resnet", "resnext", "wide_resnet")):
        return MSC_FROZEN_RESNET
    msg = f"No MSC freezing rule for backbone {name!r}: pass the sub-modules to freeze explicitly (or () for none)."
    raise ValueError(msg)
