"""Freezing named sub-modules of a network."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from anomalib_firm.console import InputError


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


def trainable_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The parameters an optimiser should hold: those not frozen (``requires_grad``)."""
    return [parameter for parameter in module.parameters() if parameter.requires_grad]
