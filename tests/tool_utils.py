"""Test helper: import one of the scripts under ``tools/`` as a module (they are not a package)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

TOOLS = Path(__file__).parents[1] / "tools"


@contextmanager
def imported_tool(name: str) -> Iterator[ModuleType]:
    """The script ``tools/<name>.py`` as a module, with ``tools/`` on ``sys.path`` only meanwhile (for its helpers)."""
    sys.path.insert(0, str(TOOLS))
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(str(TOOLS))
