"""The one list of what this package adds to anomalib: adding a model is its folder plus one entry in :data:`MODELS`.

Read by :mod:`anomalib_firm.models` (lazy attributes) and by :mod:`anomalib_firm._register`
(names on ``anomalib.models`` / ``anomalib.data``); how and when that registration runs is
explained once, in :mod:`anomalib_firm._hook`. This module is imported at interpreter start-up,
so it imports nothing.

A model folder (``models/image/<name>/``) exports its Lightning class and that class's
upper-case alias, declared in ``lightning_model.py`` as ``FIRM = cli_alias(Firm)``: jsonargparse
matches ``--model`` names case-sensitively, so the alias is what makes ``--model FIRM`` work.
"""

from __future__ import annotations

from typing import TypeVar

#: Lightning class name -> the package (model folder) that exports it and its :func:`alias_name`.
MODELS: dict[str, str] = {
    "Firm": "anomalib_firm.models.image.firm",
    "Msc": "anomalib_firm.models.image.msc",
    "Mcl": "anomalib_firm.models.image.mcl",
}

#: The package whose ``__all__`` lists our data modules (exposed on ``anomalib.data``).
DATA_PACKAGE = "anomalib_firm.data"

_Model = TypeVar("_Model", bound=type)


def model_names() -> tuple[str, ...]:
    """Lower-case names of our models (``firm``, ...), as the tools' ``--models`` options and configs spell them."""
    return tuple(name.lower() for name in MODELS)


def alias_name(name: str) -> str:
    """The alias of model class ``name`` (``Firm`` -> ``FIRM``)."""
    return name.upper()


def model_packages() -> dict[str, str]:
    """Every public model class name, aliases included, -> the package exporting it."""
    return {class_name: package for name, package in MODELS.items() for class_name in (name, alias_name(name))}


def cli_alias(model: _Model) -> _Model:
    """A subclass of ``model`` named :func:`alias_name` of it, for ``anomalib train --model FIRM``.

    It adds nothing but the name: its ``name`` property gives ``model``'s, so results and
    checkpoints are recorded under ``Firm`` either way. Assign it in the module defining
    ``model`` (``FIRM = cli_alias(Firm)``): the alias's import path is that module's, as for a
    class statement, so pickles and saved configs find it.
    """
    parent = model.__name__
    alias = alias_name(parent)

    def name(self: object) -> str:
        return parent

    name.__doc__ = f"Results land under ``{parent}`` either way."
    namespace = {
        "__module__": model.__module__,
        "__qualname__": alias,
        "__doc__": f"Alias of :class:`{parent}`, so that ``anomalib train --model {alias}`` works (exact names).",
        "name": property(name),
    }
    return type(model)(alias, (model,), namespace)
