#!/usr/bin/env bash
# Install the package with its test dependencies, then run the linters and the test suite (CPU).
# This is README's test command; .ci/run calls it. Usage: bash tools/run_tests.sh [pytest args]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python -m pip install --quiet -e ".[dev]"
# foolbox only for its bundled sample images (never imported); its own dependencies are not needed.
python -m pip install --quiet --no-deps "foolbox==3.3.4"
ruff check anomalib_firm tests tools experiments
ruff format --check anomalib_firm tests tools experiments
python -m mypy  # the package, as configured in pyproject.toml; every type: ignore says why
python -m pytest -q "$@"
