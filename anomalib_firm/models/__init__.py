"""Anomalib models of this package: FIRM, MSC, MCL (each also under its upper-case alias).

The names come from :data:`anomalib_firm.registry.MODELS`. Classes are imported on first
access, so that importing a shared component (``anomalib_firm.models.components...``) does not
pull in anomalib and every model.
"""

from __future__ import annotations

import importlib
from typing import Any

from anomalib_firm.registry import model_packages

_MODEL_PACKAGES = model_packages()

__all__ = sorted(_MODEL_PACKAGES)


def __getattr__(name: str) -> Any:
    if name in _MODEL_PACKAGES:
        return getattr(importlib.import_module(_MODEL_PACKAGES[name]), name)
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return sorted([*globals(), *_MODEL_PACKAGES])
