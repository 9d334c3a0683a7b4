"""tools/benchmark_accuracy.py fails when ``anomalib benchmark`` jobs fail (anomalib itself exits 0 then).

The workdirs below hold what a real ``anomalib benchmark`` run leaves (checked with a Digits grid
whose second category does not exist: exit status 0, the printed line below, the traceback in
runs/pipeline.log); running it here would take a minute.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from tool_utils import imported_tool

ANOMALIB_FAILURE_LINE = (
    "There were some errors when running benchmark with SerialRunner. Please check runs/pipeline.log for more details."
)


@pytest.fixture(scope="module")
def tool():
    with imported_tool("benchmark_accuracy") as module:
        yield module


def _workdir(root: Path, categories: list[int], output: str, error_log: str = "") -> Path:
    """A benchmark workdir: anomalib's output, its error log and a results.csv with a row per category."""
    root.mkdir()
    (root / "anomalib.log").write_text(output)
    (root / "runs").mkdir()
    (root / "runs" / "pipeline.log").write_text(error_log)
    if categories:
        results = root / "runs" / "benchmark" / "2026-01-01-00_00_00"
        results.mkdir(parents=True)
        lines = ["model.class_path,data.init_args.category,image_AUROC"]
        lines += [f"Firm,{category},0.9" for category in categories]
        (results / "results.csv").write_text("\n".join(lines) + "\n")
    return root


def test_complete_run_returns_its_rows(tool, tmp_path):
    workdir = _workdir(tmp_path / "ok", [0, 1], "Job benchmark completed successfully.\n")
    rows = tool.benchmark_rows(workdir, 0, [0, 1])
    assert [row["data.init_args.category"] for row in rows] == ["0", "1"]


def test_failed_job_raises_with_missing_categories_and_error_log(tool, tmp_path):
    workdir = _workdir(
        tmp_path / "partial", [0], f"{ANOMALIB_FAILURE_LINE}\n", "Traceback ...\nValueError: out of memory\n"
    )
    with pytest.raises(tool.BenchmarkFailedError) as raised:
        tool.benchmark_rows(workdir, 0, [0, 1])
    message = str(raised.value)
    assert "reported failed jobs" in message
    assert "no result for categories [1]" in message
    assert "ValueError: out of memory" in message
    assert str(workdir / "runs" / "pipeline.log") in message


@pytest.mark.parametrize(
    ("categories", "returncode", "output", "problem"),
    [
        ([], 0, f"{ANOMALIB_FAILURE_LINE}\n", "wrote no results.csv"),
        ([0, 1], 2, "error: unrecognized arguments\n", "exit status 2"),
        ([0], 0, "", "no result for categories [1]"),  # a job lost without a message: still a failure
    ],
)
def test_every_failure_sign_raises(tool, tmp_path, categories, returncode, output, problem):
    workdir = _workdir(tmp_path / "run", categories, output)
    with pytest.raises(tool.BenchmarkFailedError, match=re.escape(problem)):
        tool.benchmark_rows(workdir, returncode, [0, 1])


def test_main_exits_non_zero_when_a_benchmark_failed(tool, monkeypatch, capsys):
    def failing(config: dict, workdir: Path) -> list:
        raise tool.BenchmarkFailedError("anomalib benchmark in x failed (it reported failed jobs)")

    monkeypatch.setattr(tool, "run_benchmark", failing)
    monkeypatch.setattr(tool, "raw_pixel_knn_auroc", lambda data_args, category: 0.5)
    monkeypatch.setattr(sys, "argv", ["benchmark_accuracy.py", "--models", "firm", "--classes", "0", "--no-references"])
    with pytest.raises(SystemExit) as exited:
        tool.main()
    assert exited.value.code not in (0, None)
    assert "firm" in str(exited.value.code)
    assert "reported failed jobs" in capsys.readouterr().err


def test_no_model_names_runs_none_of_ours(tool, monkeypatch, capsys):
    """``--models`` without names (as ``--peers``): only the rows asked for, no training, no starting rows."""

    def not_expected(config: dict, workdir: Path) -> list:
        raise AssertionError("no model of ours should be trained")

    monkeypatch.setattr(tool, "run_benchmark", not_expected)
    monkeypatch.setattr(tool, "raw_pixel_knn_auroc", lambda data_args, category: 0.5)
    monkeypatch.setattr(sys, "argv", ["benchmark_accuracy.py", "--models", "--peers", "--classes", "0"])
    tool.main()
    printed = capsys.readouterr().out
    assert "raw-pixel 5-NN" in printed
    assert "before training" not in printed
