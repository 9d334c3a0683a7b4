"""tools/benchmark_inference.py: the tables it prints, on hand-made rows (the exports themselves take minutes)."""

from __future__ import annotations

import sys

import pytest
from tool_utils import imported_tool


@pytest.fixture(scope="module")
def tool():
    with imported_tool("benchmark_inference") as module:
        yield module


def _table(tool, eager: float, int8: float, timed: bool) -> list:
    speed = (10.0, 100.0) if timed else (None, None)
    return [
        tool.Row("FIRM", "6,000x4 float32", "torch eager", "fp32", None, *speed, None, None, eager),
        tool.Row("FIRM", "6,000x4 float32", "int8_ptq", "default", 3.5, *speed, 0.01, 0.001, int8),
    ]


def test_auroc_means_per_class_and_change_from_eager(tool) -> None:
    tables = [_table(tool, 0.90, 0.89, timed=True), _table(tool, 0.80, 0.80, timed=False)]
    lines = tool.render_auroc_means(["0", "1"], tables).splitlines()
    assert lines[0].count("|") == lines[1].count("|") == 9  # 4 keys + 2 classes + mean + change
    assert lines[2].endswith("| 0.9000 | 0.8000 | 0.8500 | +0.0000 |")
    assert lines[3].endswith("| 0.8900 | 0.8000 | 0.8450 | -0.0050 |")


def test_untimed_rows_leave_the_speed_columns_blank(tool) -> None:
    lines = tool.render(_table(tool, 0.9, 0.89, timed=False)).splitlines()
    assert "| 3.5 |  |  | 1.0e-02 |" in lines[3]
    timed = tool.render(_table(tool, 0.9, 0.89, timed=True)).splitlines()
    assert "| 3.5 | 10 | 100 | 1.0e-02 |" in timed[3]


def test_several_categories_parse(tool, monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["benchmark_inference.py", "--category", "0", "3", "--models", "firm"])
    assert tool.parse_args().categories == ["0", "3"]
