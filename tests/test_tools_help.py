"""Every script under tools/ starts and prints its usage: its imports of the package still resolve."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).parents[1] / "tools"
SCRIPTS = sorted(path for path in TOOLS.glob("*.py") if not path.name.startswith("_"))


def test_every_tool_is_listed() -> None:
    assert len(SCRIPTS) >= 7  # benchmarks, device check, data-set writers, OpenVINO scoring


@pytest.mark.parametrize("script", SCRIPTS, ids=[path.stem for path in SCRIPTS])
def test_tool_help(script: Path, tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, str(script), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "usage:" in completed.stdout
