"""tools/_bench_common.Progress: one line per finished job, with the elapsed time and an estimate of what is left."""

from __future__ import annotations

import re

from tool_utils import imported_tool


def test_progress_prints_one_line_per_job_with_elapsed_and_remaining(capsys):
    with imported_tool("_bench_common") as common:
        progress = common.Progress(total=3)
        progress.step("PaDiM, class 0: AUROC 0.907")
        progress.step("PaDiM, class 1: AUROC 0.990")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    pattern = r"\[(\d)/3\] PaDiM, class \d: AUROC 0\.9\d\d \(\d+\.\d min so far, about \d+\.\d min left\)"
    assert [re.fullmatch(pattern, line).group(1) for line in lines] == ["1", "2"]
