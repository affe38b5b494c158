#!/usr/bin/env bash
# One prepared GPU check (< 8 minutes on an H100): GPU-marked tests, then the measurements.
# Installs nothing beyond the project itself (torch must already be on the GPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -e . --no-deps -q
python -m pytest -q -m gpu tests || [ $? -eq 5 ]   # exit 5 = no GPU-marked tests collected
python -m benchmarks.gpu_check --out "${OUT:-.}/gpu_check.json"
