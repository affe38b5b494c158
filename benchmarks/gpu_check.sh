#!/usr/bin/env bash
# The prepared GPU check (issue 16; ~9 minutes on an H200): the measurements, then the GPU-marked tests.
# Runs from the checkout without installing it (the GPU machine has no package index); pass OUT=dir for the
# results. Merge the JSON of one or more runs into BENCHMARKS.md / README.md with benchmarks.gpu_report.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:-.}"
python3 -c "import timm, torch, benchmarks.gpu_check" || exit 3   # fail in seconds, not after the budget
timeout 450 python3 -m benchmarks.gpu_check --budget-s 420 --out "$OUT/gpu_check.json" "$@" > "$OUT/gpu_check.log" 2>&1
echo "gpu_check rc=$?"; grep "\[gpu_check\]" "$OUT/gpu_check.log"
timeout 90 python3 -m pytest -q -m gpu tests/search/test_gpu.py -p no:cacheprovider 2>&1 | tail -3
