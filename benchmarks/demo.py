"""The embedded demo as a user runs it: the README's command in a fresh process, timed wall to wall.

    python -m benchmarks.demo

Writes benchmarks/results/demo.json (the command, wall seconds, the results.json top-1s, machine); the
README's demo time and the summary's demo line come from it.
"""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, machine, write_json

COMMAND = "python cli.py fit --config configs/demo.yaml"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        args = [*shlex.split(COMMAND), "--model.init_args.output_dir", str(out),
                "--trainer.default_root_dir", tmp, "--trainer.logger", "false",
                "--trainer.callbacks.init_args.dirpath", str(Path(tmp) / "ckpt")]
        m = machine()
        start = time.perf_counter()
        run = subprocess.run([sys.executable, *args[1:]], cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if run.returncode != 0:
            raise SystemExit(f"the demo failed (exit {run.returncode}):\n{run.stderr[-3000:]}")
        results = json.loads((out / "results.json").read_text())
    data = {"command": COMMAND, "wall_seconds": wall, "note": results.get("note"),
            **{k: results[k] for k in ("model", "w_bits", "a_bits", "seed", "top1_float", "top1_init", "top1_evolq",
                                       "search_seconds", "evaluations")},
            "machine": m}
    write_json("demo", data)
    print(json.dumps({k: v for k, v in data.items() if k != "machine"}, indent=1))


if __name__ == "__main__":
    main()
