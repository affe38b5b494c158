"""Run one config for several seeds (one process per GPU, or one after another on CPU) and summarise.

    evolq-pl seeds --config configs/imagenet/base.yaml --config configs/imagenet/deit_small_w4a8.yaml \
        --seeds 0 1 2 --gpus 0 1 2 --out runs/seeds/deit_small_w4a8 [-- extra cli.py fit arguments]

Each seed runs ``cli.py fit`` with the search seed and the calibration-subset seed set to it and its
``results.json`` in ``<out>/seed<k>/``; then ``summary.md`` and ``summary.csv`` hold mean ± std per metric.
"""
from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from evolq_pl.cli.argv import command_parser

METRICS = ("top1_float", "top1_init", "top1_evolq", "top5_float", "top5_init", "top5_evolq", "fitness_init",
           "fitness_final", "evaluations", "search_seconds")


def seed_command(configs: list[str], seed: int, out: Path, extra: list[str]) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve().parents[1] / "cli.py"), "fit"]
    for c in configs:
        cmd += ["--config", c]
    return cmd + ["--model.init_args.search.seed", str(seed), "--data.init_args.seed", str(seed),
                  "--seed_everything", str(seed), "--model.init_args.output_dir", str(out / f"seed{seed}"),
                  "--trainer.default_root_dir", str(out / f"seed{seed}"), *extra]


def run_seeds(configs: list[str], seeds: list[int], out: Path, gpus: list[str], extra: list[str]) -> None:
    """Waves of one process per GPU (each sees only its device); sequential on CPU."""
    slots = gpus or [None]
    for start in range(0, len(seeds), len(slots)):
        procs = []
        for seed, gpu in zip(seeds[start:start + len(slots)], slots):
            env = dict(os.environ)
            if gpu is not None:
                env["CUDA_VISIBLE_DEVICES"] = gpu
            procs.append((seed, subprocess.Popen(seed_command(configs, seed, out, extra), env=env)))
        for seed, p in procs:
            if p.wait() != 0:
                raise SystemExit(f"seed {seed} failed (exit {p.returncode}); see its output above")


def summarise(out: Path, seeds: list[int]) -> dict[str, Any]:
    """Read ``<out>/seed<k>/results.json``; write summary.md / summary.csv with mean ± std."""
    runs = {s: json.loads((out / f"seed{s}" / "results.json").read_text()) for s in seeds}
    rows = []
    for metric in METRICS:
        values = [r[metric] for r in runs.values() if metric in r]
        if values:
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            rows.append({"metric": metric, "mean": statistics.mean(values), "std": std,
                         **{f"seed{s}": runs[s].get(metric) for s in seeds}})
    with open(out / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    first = next(iter(runs.values()))
    lines = [f"# {first['model']} W{first['w_bits']}A{first['a_bits']}, seeds {', '.join(map(str, seeds))}", "",
             "| metric | mean ± std | " + " | ".join(f"seed {s}" for s in seeds) + " |",
             "|---|---|" + "---|" * len(seeds)]
    for r in rows:
        lines.append(f"| {r['metric']} | {r['mean']:.4g} ± {r['std']:.2g} | "
                     + " | ".join(f"{r[f'seed{s}']:.4g}" for s in seeds) + " |")
    lines += ["", "Per-seed files: " + ", ".join(str(out / f"seed{s}" / "results.json") for s in seeds)]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    return {"rows": rows, "runs": runs}


def main(argv: list[str] | None = None) -> None:
    parser, argv, extra = command_parser("seeds", __doc__, argv)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--gpus", nargs="*", default=[], help="device ids; one process per device")
    parser.add_argument("--out", required=True)
    parser.add_argument("--summary-only", action="store_true")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if not args.summary_only:
        run_seeds(args.config, args.seeds, out, args.gpus, extra)
    summarise(out, args.seeds)
    print((out / "summary.md").read_text())
