"""tools/firm_loss_comparison.py: the summary it prints, on hand-made curves (the runs themselves take minutes)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tool_utils import imported_tool


@pytest.fixture(scope="module")
def tool():
    with imported_tool("firm_loss_comparison") as module:
        yield module


def _rows(loss: str, aurocs: list[float], seed: int = 0) -> list[dict]:
    return [
        {
            "class": 0,
            "loss": loss,
            "seed": seed,
            "epoch": 2 * i,
            "step": 10 * i,
            "val_auroc": a,
            "raw_pixel_val_auroc": 0.9,
        }
        for i, a in enumerate(aurocs)
    ]


def test_epochs_to_reach(tool) -> None:
    rows = _rows("firm", [0.5, 0.8, 0.95])
    assert tool.epochs_to_reach(rows, 0.8) == 2
    assert tool.epochs_to_reach(rows, 0.99) is None


def test_summary_against_ntxent_final(tool) -> None:
    rows = _rows("ntxent", [0.5, 0.7, 0.8]) + _rows("firm", [0.5, 0.85, 0.9]) + _rows("supcon", [0.5, 0.6, 0.7])
    table = tool.summarise(rows, ["firm", "ntxent", "supcon"])
    lines = {line.split()[0]: line.split() for line in table.splitlines()[2:]}
    assert lines["firm"][1:4] == ["0.9000", "0.7750", "2.0"]  # AULC: (0.675 * 2 + 0.875 * 2) / 4
    assert lines["ntxent"][3] == "4.0"
    assert lines["supcon"][3] == "-"


def test_curves_csv_round_trip(tool, tmp_path: Path) -> None:
    """``--resume`` and ``--summarise-only`` read back what the runs wrote, numbers as numbers."""
    import csv

    rows = _rows("firm", [0.5, 0.8]) + _rows("ntxent", [0.6, 0.7], seed=1)
    path = tmp_path / "curves.csv"
    with path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert tool.read_rows(path) == rows
