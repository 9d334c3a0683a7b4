"""tools/device_check.sh --dry-run: the GPU acceptance's code path runs end to end on the CPU."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

TOOLS = Path(__file__).parents[1] / "tools"


@pytest.mark.slow
def test_device_check_dry_run_prints_every_section(tmp_path):
    completed = subprocess.run(
        ["bash", str(TOOLS / "device_check.sh"), "--dry-run"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    table = completed.stdout.split("device check (dry run")[1]
    for model in ("FIRM", "MCL", "MSC"):
        assert f"{model} " in table
        assert "items/s" in table
    assert "s/epoch ->" in table
    difference = float(table.split("max |score difference|")[1].split()[0])
    assert difference < 1e-3  # OpenVINO f32 and eager PyTorch give the same normalised scores
    assert "FAILED" not in table
