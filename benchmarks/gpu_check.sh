#!/usr/bin/env bash
# The prepared GPU check (~8 minutes on an H200): the user path first (issue 24: `evolq-pl fit` with the shipped
# configs, default settings and the other compile path, the float floor, compiled vs eager per stage), then the
# GPU-marked tests. Runs from the checkout (the GPU machine has no package index: jsonargparse and its signatures
# extras come as wheels, see README "GPU check"); pass OUT=dir for the results. benchmarks.gpu_report merges them.
# The earlier sections (benchmarks.gpu_check: models, memory, precision) run with SECTIONS=all.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:-.}"
# fail in seconds on a missing package, not after the budget
python3 -c "import timm, torch, lightning, jsonargparse, docstring_parser, typeshed_client, benchmarks.gpu_user_path" || exit 3
# a non-editable install gives the `evolq-pl` command (the run falls back to `python -m evolq_pl` without it)
python3 -m pip install -q --no-deps --no-index --no-build-isolation --target /tmp/evolq_site . > /dev/null 2>&1 \
  && export PATH="/tmp/evolq_site/bin:$PATH"
timeout 480 python3 -m benchmarks.gpu_user_path --budget-s 450 --out "$OUT/gpu_user_path.json" > "$OUT/gpu_user_path.log" 2>&1
echo "gpu_user_path rc=$?"; grep "\[user_path\]" "$OUT/gpu_user_path.log"; tail -30 "$OUT/gpu_user_path.log"
cp /tmp/evolq_user_path/*.log "$OUT/" 2> /dev/null
if [ "${SECTIONS:-}" = all ]; then
  timeout 450 python3 -m benchmarks.gpu_check --budget-s 420 --out "$OUT/gpu_check.json" > "$OUT/gpu_check.log" 2>&1
  echo "gpu_check rc=$?"; grep "\[gpu_check\]" "$OUT/gpu_check.log"
fi
timeout 60 python3 -m pytest -q -m gpu tests/search/test_gpu.py -p no:cacheprovider 2>&1 | tail -3
