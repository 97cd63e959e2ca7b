#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): needs only python3 with torch and torchvision.
# Run from anywhere; about 4 minutes on an H100. Extra arguments go to the script.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec python3 -u benchmarks/gpu_check.py "$@"
