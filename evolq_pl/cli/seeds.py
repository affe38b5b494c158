"""Run one config for several seeds (one process per GPU, or one after another on CPU) and summarise.

    evolq-pl seeds --config configs/imagenet/base.yaml --config configs/imagenet/deit_small_w4a8.yaml \\
        --seeds 0 1 2 --gpus 0 1 2 --out runs/seeds/deit_small_w4a8 [-- extra fit arguments]

Each seed runs ``evolq-pl fit`` with the search seed and the calibration-subset seed set to it, and keeps
everything (logs, checkpoints, results.json) in ``<out>/seed<k>/``; then ``summary.md`` and ``summary.csv``
hold mean ± std (sample std, ddof = 1) per metric, and ``summary.md`` the paired comparison of Evol-Q with the
calibrated init: the mean top-1 difference over seeds with its 95 % t interval, and the exact McNemar test on
per-image correctness pooled over seeds (a gain is claimed only where the interval lies above zero).

Rerunning into the same ``--out`` skips finished seeds of the same settings, resumes an interrupted seed from
its last.ckpt, and refuses a folder that holds a run with other settings. ``--print-commands`` prints one
command per seed (for a cluster scheduler) and runs nothing; ``--summary-only`` aggregates afterwards.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import shlex
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from evolq_pl.cli.argv import command_parser
from evolq_pl.report.stats import compare_runs, describe, verdict

# arguments the seeds command sets for every seed itself
SEED_OWNED = ("--run_dir", "--ckpt_path", "--model.init_args.search.seed", "--data.init_args.seed", "--seed_everything")
METRICS = ("top1_float", "top1_init", "top1_evolq", "top5_float", "top5_init", "top5_evolq", "fitness_init",
           "fitness_final", "evaluations", "search_seconds")


class SeedsError(ValueError):
    pass


def fingerprint(configs: list[str], extra: list[str]) -> str:
    """What the user asked for, seed aside: the config files' contents and the extra arguments."""
    h = hashlib.sha256()
    for c in configs:
        h.update(Path(c).read_bytes())
    h.update(json.dumps(extra).encode())
    return h.hexdigest()[:16]


def seed_dir(out: Path, seed: int) -> Path:
    return out / f"seed{seed}"


def last_checkpoint(run_dir: Path) -> Path | None:
    found = sorted(run_dir.rglob("last*.ckpt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def seed_command(configs: list[str], seed: int, out: Path, extra: list[str]) -> list[str]:
    """The child ``fit`` of one seed, through the package (works from any install), resuming if it can."""
    run_dir = seed_dir(out, seed)
    cmd = [sys.executable, "-m", "evolq_pl", "fit"]
    for c in configs:
        cmd += ["--config", c]
    cmd += ["--model.init_args.search.seed", str(seed), "--data.init_args.seed", str(seed),
            "--seed_everything", str(seed), "--run_dir", str(run_dir), *extra]
    ckpt = last_checkpoint(run_dir) if not finished(out, seed) else None
    return cmd + (["--ckpt_path", str(ckpt)] if ckpt else [])


def finished(out: Path, seed: int) -> bool:
    """results.json written with every measurement (one listing ``missing`` is rerun: it resumes)."""
    path = seed_dir(out, seed) / "results.json"
    return path.exists() and "missing" not in json.loads(path.read_text())


def check_arguments(configs: list[str], extra: list[str]) -> None:
    for c in configs:
        if not Path(c).is_file():
            raise SeedsError(f"--config={c!r}: no such file")
    owned = [a for a in extra if a.split("=")[0] in SEED_OWNED]
    if owned:
        raise SeedsError(f"{owned[0].split('=')[0]} is set per seed by the seeds command; remove it from the "
                         f"arguments after --")


def plan(configs: list[str], seeds: list[int], out: Path, extra: list[str]) -> list[int]:
    """Seeds still to run; refuses a seed folder that holds a run of other settings."""
    check_arguments(configs, extra)
    key, todo = fingerprint(configs, extra), []
    for seed in seeds:
        marker = seed_dir(out, seed) / "run.json"
        if marker.exists():
            try:
                stored = json.loads(marker.read_text())
            except ValueError:
                raise SeedsError(f"{marker} is damaged; delete {seed_dir(out, seed)} to rerun that seed") from None
            if stored.get("fingerprint") != key:
                raise SeedsError(f"--out={str(out)!r}: {seed_dir(out, seed)} holds a run of other settings "
                                 f"(configs {stored.get('configs')} with arguments {stored.get('extra')}; now "
                                 f"{configs} with {extra}, or a config file changed since); use another --out "
                                 "or delete that folder")
            if finished(out, seed):
                print(f"seed {seed}: finished earlier with the same settings, skipped", file=sys.stderr)
                continue
        todo.append(seed)
    return todo


def mark(configs: list[str], seed: int, out: Path, extra: list[str]) -> None:
    """Record in the seed's folder which settings it runs (read by ``plan`` on a rerun)."""
    seed_dir(out, seed).mkdir(parents=True, exist_ok=True)
    (seed_dir(out, seed) / "run.json").write_text(json.dumps(
        {"fingerprint": fingerprint(configs, extra), "configs": configs, "extra": extra, "seed": seed}))


def run_seeds(configs: list[str], seeds: list[int], out: Path, gpus: list[str], extra: list[str]) -> None:
    """Waves of one process per GPU (each sees only its device); sequential on CPU. A seed that exits
    non-zero or writes no results.json is a failure; the others still run."""
    slots, failed = gpus or [None], []
    for start in range(0, len(seeds), len(slots)):
        procs = []
        for seed, gpu in zip(seeds[start:start + len(slots)], slots):
            env = dict(os.environ)
            if gpu is not None:
                env["CUDA_VISIBLE_DEVICES"] = gpu
            mark(configs, seed, out, extra)
            procs.append((seed, subprocess.Popen(seed_command(configs, seed, out, extra), env=env)))
        for seed, p in procs:
            if p.wait() != 0 or not finished(out, seed):
                failed.append(f"seed {seed} (exit {p.returncode})")
    if failed:
        raise SeedsError(f"{', '.join(failed)} did not finish; rerun the same command to resume them")


def comparable(settings: dict[str, Any]) -> dict[str, Any]:
    search = {k: v for k, v in settings.get("search", {}).items() if k != "seed"}
    return {**settings, "search": search}


def load_runs(out: Path, seeds: list[int]) -> dict[int, dict[str, Any]]:
    """Per-seed results; refuses missing seeds and seeds whose settings differ (model, bits, search, calib size)."""
    missing = [s for s in seeds if not (seed_dir(out, s) / "results.json").exists()]
    if missing:
        raise SeedsError(f"no results.json for seed(s) {missing} under --out={str(out)!r}; run them first "
                         "(without --summary-only) or leave them out of --seeds")
    runs = {s: json.loads((seed_dir(out, s) / "results.json").read_text()) for s in seeds}
    partial = {s: r["missing"] for s, r in runs.items() if "missing" in r}
    if partial:
        raise SeedsError(f"seed(s) {sorted(partial)} lack measurements {partial}; rerun them (without --summary-only)")
    reference = comparable(runs[seeds[0]].get("settings", {}))
    for s, r in runs.items():
        if comparable(r.get("settings", {})) != reference:
            raise SeedsError(f"seed {s} ran with other settings than seed {seeds[0]} "
                             f"({r.get('model')} W{r.get('w_bits')}A{r.get('a_bits')} vs "
                             f"{runs[seeds[0]].get('model')} W{runs[seeds[0]].get('w_bits')}A{runs[seeds[0]].get('a_bits')}"
                             "); they are not averaged")
    return runs


def summarise(out: Path, seeds: list[int]) -> dict[str, Any]:
    """Read ``<out>/seed<k>/results.json``; write summary.md / summary.csv with mean ± std (ddof = 1)."""
    runs = load_runs(out, seeds)
    rows = []
    for metric in METRICS:
        values = [r[metric] for r in runs.values() if r.get(metric) is not None]
        if len(values) == len(runs):
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            rows.append({"metric": metric, "mean": statistics.mean(values), "std": std,
                         **{f"seed{s}": runs[s].get(metric) for s in seeds}})
    with open(out / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["metric", "mean", "std", *(f"seed{s}" for s in seeds)])
        writer.writeheader()
        writer.writerows(rows)
    first = next(iter(runs.values()))
    lines = [f"# {first['model']} W{first['w_bits']}A{first['a_bits']}, seeds {', '.join(map(str, seeds))}", "",
             "| metric | mean ± std | " + " | ".join(f"seed {s}" for s in seeds) + " |",
             "|---|---|" + "---|" * len(seeds)]
    for r in rows:
        lines.append(f"| {r['metric']} | {r['mean']:.4g} ± {r['std']:.2g} | "
                     + " | ".join(f"{r[f'seed{s}']:.4g}" for s in seeds) + " |")
    paired = compare_runs([runs[s] for s in seeds])
    lines += ["", "std: sample standard deviation over seeds (ddof = 1).", "", paired_line(paired),
              "Per-seed files: " + ", ".join(str(seed_dir(out, s) / "results.json") for s in seeds)]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    return {"rows": rows, "runs": runs, "paired": paired}


def paired_line(p: dict[str, Any] | None) -> str:
    if p is None:
        return "No paired comparison: a run lacks the init or the Evol-Q top-1."
    counts = f" ({p['only_new']} images only Evol-Q gets right, {p['only_base']} only init, pooled over " \
             "seeds)" if "mcnemar_p" in p else ""
    return (f"Evol-Q − init, top-1, paired over {p['n_seeds']} seeds (mean [95 % t interval, ddof = 1]): "
            f"{describe(p)}{counts}: {verdict(p)}.")


def main(argv: list[str] | None = None) -> None:
    parser, argv, extra = command_parser("seeds", __doc__, argv)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--gpus", nargs="*", default=[], help="device ids; one process per device")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--summary-only", action="store_true", help="aggregate finished seeds, run nothing")
    parser.add_argument("--print-commands", action="store_true",
                        help="print one fit command per seed still to run (for a scheduler), run nothing")
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()  # printed commands work from any folder
    configs = [str(Path(c).resolve()) for c in args.config]
    if not args.summary_only:
        todo = plan(configs, args.seeds, out, extra)
        if args.print_commands:
            for seed in todo:
                mark(configs, seed, out, extra)
                print(shlex.join(seed_command(configs, seed, out, extra)))
            return
        run_seeds(configs, todo, out, args.gpus, extra)
    summarise(out, args.seeds)
    print((out / "summary.md").read_text())
