#!/usr/bin/env bash
# The GPU acceptance in one command (see tools/device_check.py): training speed of the three models
# (ours vs paper-style, peak memory), one epoch of FIRM's full protocol extrapolated to 2,000, and
# OpenVINO-vs-torch parity of a model trained on the device. Under 8 minutes on one H100/H200.
# Usage: bash tools/device_check.sh [--dry-run] [--sections speed full export]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PYTHONWARNINGS=ignore
exec python "$here/device_check.py" "$@"
