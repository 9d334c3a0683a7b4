"""Anomalib models of this package: FIRM, MSC, MCL (each also under its upper-case alias).

Classes are imported on first access, so that importing a shared component
(``anomalib_firm.models.components...``) does not pull in anomalib and every model.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODEL_MODULES = {
    "Firm": "anomalib_firm.models.image.firm",
    "FIRM": "anomalib_firm.models.image.firm",
    "Msc": "anomalib_firm.models.image.msc",
    "MSC": "anomalib_firm.models.image.msc",
    "Mcl": "anomalib_firm.models.image.mcl",
    "MCL": "anomalib_firm.models.image.mcl",
}

__all__ = sorted(_MODEL_MODULES)


def __getattr__(name: str) -> Any:
    if name in _MODEL_MODULES:
        return getattr(importlib.import_module(_MODEL_MODULES[name]), name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return sorted([*globals(), *_MODEL_MODULES])
