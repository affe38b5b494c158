"""Shared by the benchmark scripts: machine description and BENCHMARKS.md section updates."""
from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import statistics
import subprocess
from pathlib import Path
from typing import Any, Callable

import torch

from evolq_pl.report.stats import describe, verdict

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
README_MD = ROOT / "README.md"


def replace_block(text: str, name: str, markdown: str) -> str:
    """``text`` with the block between ``<!-- name:start -->`` and ``<!-- name:end -->`` replaced."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start not in text or end not in text:
        raise RuntimeError(f"no {start} … {end} block")
    return text[: text.index(start)] + f"{start}\n{markdown.strip()}\n{end}" + text[text.index(end) + len(end):]


def machine() -> dict[str, Any]:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    changed = subprocess.run(["git", "status", "--porcelain", "--", "evolq_pl", "configs", "benchmarks/*.py"],
                             cwd=ROOT, capture_output=True, text=True)
    return {"date": datetime.date.today().isoformat(), "commit": commit.stdout.strip() or "unknown",
            "dirty": bool(changed.stdout.strip()) or changed.returncode != 0,  # code not in the commit measured
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
            "platform": importlib.import_module("benchmarks.fingerprint").platform_id()}


def machine_line(m: dict[str, Any]) -> str:
    return (f"Measured {m['date']} at commit `{m['commit']}` on {m['device']} ({m['cores']} cores, "
            f"{m['torch_threads']} torch threads, torch {m['torch']}).")


def write_json(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def update_section(name: str) -> None:
    """After a benchmark wrote results/<name>.json: rewrite BENCHMARKS.md (and its history file) wholly from
    the stored JSON, so that every section and the summary stay what ``python -m benchmarks.report`` writes."""
    benchmarks, history = render_benchmarks()
    if f"<!-- {name}:start -->" not in benchmarks:
        raise RuntimeError(f"section {name!r} is not among benchmarks.report's sections")
    BENCHMARKS_MD.write_text(benchmarks)
    HISTORY_MD.write_text(history)
    README_MD.write_text(render_readme())


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def benchmark_parser(doc: str | None) -> argparse.ArgumentParser:
    """A benchmark's argument parser with the options of ``record``: ``--out`` and ``--no-report``."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here (default: benchmarks/results)")
    parser.add_argument("--no-report", action="store_true", help="do not update BENCHMARKS.md")
    return parser


def record(name: str, data: dict[str, Any], args: argparse.Namespace) -> None:
    """Write ``data`` (to ``--out`` or results/<name>.json) and, unless ``--no-report``, BENCHMARKS.md (its
    section shows results/<name>_before.json, the same measurement at an earlier commit, when present)."""
    if args.out is not None:
        args.out.write_text(json.dumps(data, indent=2) + "\n")
    else:
        write_json(name, data)
    if not args.no_report and args.out is None:
        update_section(name)


# ----------------------------------------------------------------------------------------- BENCHMARKS.md
HEADER = ("# Benchmarks\n\nWritten wholly by `python -m benchmarks.report` from `benchmarks/results/*.json` (each "
          "section names the script that measured it, its commit, machine and thread counts; the summary is "
          "generated from the same records). Records measured on earlier reference checkpoints are in "
          "BENCHMARKS_HISTORY.md.\n")
HISTORY_MD = ROOT / "BENCHMARKS_HISTORY.md"


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _with_before(module: str, name: str) -> Callable[[], str | None]:
    def render() -> str | None:
        data = _load(name)
        if data is None:
            return None
        return importlib.import_module(f"benchmarks.{module}").section(data, _load(f"{name}_before"))
    return render


def _sections() -> dict[str, Callable[[], str | None]]:
    """Section name → its markdown from the stored JSON (None: never measured), in BENCHMARKS.md order."""
    mod = lambda name: importlib.import_module(f"benchmarks.{name}")  # noqa: E731 (they import this module)
    acc, speed, land, exp, budget, gpu = (_load(n) for n in ("accuracy", "search_speed", "landscape", "export",
                                                              "error_budget", "gpu_check"))
    return {
        "summary": summary,
        "accuracy": lambda: acc and mod("accuracy").report(acc["records"]),
        "error_budget": lambda: budget and mod("error_budget").report(budget["records"], budget["machine"]),
        "search_speed": lambda: speed and mod("search_speed").section(speed),
        "calibration_memory": _with_before("calibration_memory", "calibration_memory"),
        "checkpoint_cost": _with_before("checkpoint_cost", "checkpoint_cost"),
        "code_size": _with_before("code_size", "code_size"),
        "reference_parity": _with_before("reference_parity", "reference_parity"),
        "export": lambda: exp and mod("export").report(exp["records"], exp["machine"], exp.get("imagenet_sizes"),
                                                       exp.get("imagenet_sizes_machine")),
        "landscape": lambda: land and mod("landscape").section(land),
        "gpu": lambda: gpu and mod("gpu_report").benchmarks_md(gpu, gpu["commit"], gpu.get("date", "?")),
    }


def render_benchmarks() -> tuple[str, str]:
    """(BENCHMARKS.md, BENCHMARKS_HISTORY.md) from the stored JSON."""
    blocks = [HEADER]
    for name, render in _sections().items():
        md = render()
        if md:
            blocks.append(f"<!-- {name}:start -->\n{md.strip()}\n<!-- {name}:end -->\n")
    acc = _load("accuracy")
    history = "# Benchmark history\n\nWritten by `python -m benchmarks.report`.\n\n"
    if acc is not None:
        history += importlib.import_module("benchmarks.accuracy").history(acc["records"], acc.get("superseded", []))
    fixed = _load("landscape_fixed_radius")
    if fixed is not None:
        history += "\n" + importlib.import_module("benchmarks.landscape").history(fixed)
    return "\n".join(blocks), history.strip() + "\n"


def _accuracy_summary(records: dict[str, dict[str, Any]]) -> list[str]:
    accuracy = importlib.import_module("benchmarks.accuracy")
    current = [r for r in records.values() if accuracy.is_current(r)]
    lines = ["", "**Does the paper's search beat the calibrated init?** Top-1 on the 10,000 test images, Evol-Q − "
             "init paired over seeds: mean [95 % t interval] and, where every run stored per-image correctness, "
             "exact McNemar pooled over seeds (about these runs, not new seeds), Holm-adjusted over the six "
             "settings below; a gain is claimed only where the interval excludes zero and the adjusted p < 0.05:", ""]
    groups = accuracy._group(current, "main")
    compared = accuracy.family(groups)
    for (ref, w, a, sel, loss), rs in sorted(groups.items()):
        p = compared[ref, w, a, sel, loss]
        mean = lambda f: statistics.mean(r[f] for r in rs)  # noqa: E731
        lines.append(f"- {ref} W{w}A{a} (seeds {sorted(r['spec']['seed'] for r in rs)}): float "
                     f"{rs[0]['top1_float']:.2f}, init {mean('top1_init'):.2f}, Evol-Q {mean('top1_evolq'):.2f}; "
                     f"Δ {describe(p)}: {verdict(p)}.")
    lines += _preset_summary(records)
    return lines


def _preset_summary(records: dict[str, dict[str, Any]]) -> list[str]:
    accuracy = importlib.import_module("benchmarks.accuracy")
    try:
        choice = accuracy.chosen_preset(records)
    except ValueError:
        return []
    name = choice["preset"]
    tests = accuracy.preset_comparison(records, name)
    found = "; ".join(f"{ref} W3A8 Δ {describe(p)} ({p['n_seeds']} seeds): {verdict(p)}" for ref, p in tests.items())
    return ["", f"**A preset beyond the paper** (`configs/presets/beyond_paper.yaml`: {name}, "
            f"`{accuracy.VARIANTS[name]}`), chosen on the validation split among {len(accuracy.PRESET_CANDIDATES)} "
            f"candidates (mean Δ {choice['val_delta_mean'][name]['delta_mean']:+.2f} over the paper's search there), "
            f"then against the paper's search on test on fresh seeds, both run at one commit, paired by seed "
            f"(Holm over the two models): " + (found or "not measured on test yet") + "."]


def render_readme() -> str:
    """README.md with its headline block (the accuracy verdicts and the demo) regenerated."""
    acc, demo = _load("accuracy"), _load("demo")
    lines = _accuracy_summary(acc["records"])[1:] if acc is not None else ["Accuracy: not measured."]
    if demo is not None:
        lines += ["", _demo_line(demo)]
    return replace_block(README_MD.read_text(), "headline", "\n".join(lines))


def _demo_line(demo: dict[str, Any]) -> str:
    minutes, seconds = divmod(round(demo["wall_seconds"]), 60)
    return (f"The demo (`{demo['command']}`) took {minutes} min {seconds:02d} s wall on {demo['machine']['cores']} "
            f"CPU cores at `{demo['machine']['commit']}`: {demo['model']} W{demo['w_bits']}A{demo['a_bits']} seed "
            f"{demo['seed']}, float {demo['top1_float']:.2f}, init {demo['top1_init']:.2f}, Evol-Q "
            f"{demo['top1_evolq']:.2f} top-1 (one seed: an example, not a result).")


def summary() -> str:
    """The summary, generated from the records (every figure is in a section below)."""
    lines = ["## Summary", "", "Every figure below is generated from the sections that follow."]
    acc = _load("accuracy")
    if acc is not None:
        lines += _accuracy_summary(acc["records"])
    budget = _load("error_budget")
    if budget is not None:
        parts = []
        for name in sorted({r["model"] for r in budget["records"]}):
            for bits in sorted({r["w_bits"] for r in budget["records"] if r["model"] == name}):
                rs = [r for r in budget["records"] if r["model"] == name and r["w_bits"] == bits]
                loss = rs[0]["top1_float"] - statistics.mean(r["top1_init"] for r in rs)
                searched = statistics.mean(r["top1_searched_float"] - r["top1_init"] for r in rs)
                embed_g = statistics.mean(r["top1_embed_float"] - r["top1_init"] for r in rs)
                parts.append(f"{name} W{bits}A8: float − init {loss:.2f} points; attention weights (the paper's "
                             f"search space) back to float {searched:+.2f}, stem / patch embed {embed_g:+.2f}")
        lines += ["", "Error budget (one group of quantizers back to float at a time, so the groups do not add "
                  "up):", "", *(f"- {p}." for p in parts)]
    speed = _load("search_speed")
    if speed is not None:
        threads = sorted(speed["quant_over_float"], key=int)
        per = lambda key, fmt: " / ".join(fmt.format(speed[key][t]) for t in threads)  # noqa: E731
        lines += ["", f"Search speed (CPU, {' / '.join(threads)} torch threads): quantized / float forward "
                  f"{per('quant_over_float', '{:.2f}')} eager, {per('compiled_quant_over_float', '{:.2f}')} compiled; "
                  f"cached candidate evaluation {per('cached_over_full', '{:.2f}')} of a full forward; the whole search "
                  f"{per('search_speedup', '{:.2f}×')} faster than full-forward evaluation eager, "
                  f"{per('compiled_search_speedup', '{:.2f}×')} compiled (its cold compile, "
                  f"{per('compile_seconds', '{:.0f} s')}, included); every search ends on the same scales: "
                  f"{all(speed['same_final_scales'].values())}."]
    land = _load("landscape")
    if land is not None:
        landscape = importlib.import_module("benchmarks.landscape")
        claims = [c for family in landscape.FAMILIES for c in landscape.bit_claims(land["records"], family)]
        lines += ["", "Loss landscape (radius tied to the bit width, " f"{land['args']['directions']} directions):",
                  "", *(f"- {c}." for c in claims)]
    mem = _load("calibration_memory")
    if mem is not None:
        live = f"; live tensor bytes {mem['live_calib_over_forward']:.2f}×" if "live_calib_over_forward" in mem else ""
        lines += ["", f"Calibration memory ({mem['model']}, {mem['batches']} batches of {mem['batch']}): peak "
                  f"{mem['measure'].replace('_', ' ')} {mem['calib_over_forward']:.2f}× a float forward{live}."]
    parity = _load("reference_parity")
    if parity is not None:
        equal = [name for name, r in parity.items() if r["logits_bitwise_equal"]]
        lines += ["", f"Parity with the published code: logits bit for bit equal on {', '.join(equal) or 'none'} "
                  f"(of {len(parity)} models checked)."]
    exp = _load("export")
    if exp is not None:
        rs = exp["records"]
        lines += ["", "Export of searched checkpoints: onnxruntime argmax agreement with PyTorch "
                  f"{min(min(r['onnx_basic']['argmax_agreement'], r['onnx_fused']['argmax_agreement']) for r in rs):.2f}–100 %, "
                  f"safetensors identical logits; file size against the float weights: safetensors "
                  + ", ".join(f"{r['model']} W{r['w_bits']} {r['safetensors_bytes'] / r['float_bytes']:.2f}×" for r in rs)
                  + "; ONNX (integer weights) "
                  + ", ".join(f"{r['model']} W{r['w_bits']} {r['onnx_bytes'] / r['float_bytes']:.2f}×"
                              for r in rs + exp.get("imagenet_sizes", []))
                  + "."]
    gpu = _load("gpu_check")
    lines += ["", f"GPU: measured {gpu.get('date', '?')} at `{gpu['commit']}` on {gpu['environment']['device']} "
              "(section below)." if gpu is not None else "GPU: not measured."]
    demo = _load("demo")
    if demo is not None:
        lines += ["", _demo_line(demo)]
    return "\n".join(lines)


def stale_records(current: str | None = None) -> str | None:
    """Why the cited accuracy records do not hold for the working tree (None: every one does): records that
    ``benchmarks.fingerprint.holds`` refuses (measured by code of another fingerprint)."""
    acc = _load("accuracy")
    if acc is None:
        return None
    accuracy = importlib.import_module("benchmarks.accuracy")
    fp = importlib.import_module("benchmarks.fingerprint")
    if current is None:
        current = fp.fingerprint()
    refused = [r for r in acc["records"].values() if accuracy.is_current(r) and not fp.holds(r, current)]
    if not refused:
        return None
    stale: dict[str, set[str]] = {}
    for r in refused:
        stale.setdefault(r["spec"]["suite"], set()).add(r.get("machine", {}).get("commit", "?"))
    where = "; ".join(f"{suite} (measured at {', '.join(sorted(c))})" for suite, c in sorted(stale.items()))
    return (f"{len(refused)} cited accuracy records were measured by code that computes other bits than the "
            f"working tree ({current} on {fp.platform_id()}): {where}; rerun them: "
            f"python -m benchmarks.accuracy --suite "
            f"{' '.join(sorted(stale))} --stale")


def main() -> None:
    parser = argparse.ArgumentParser(description="Rewrite BENCHMARKS.md and BENCHMARKS_HISTORY.md from the stored JSON.")
    parser.add_argument("--check", action="store_true", help="exit 1 if the files differ from the regenerated ones")
    args = parser.parse_args()
    if args.check:
        benchmarks, history = render_benchmarks()
        stale = [p.name for p, text in ((BENCHMARKS_MD, benchmarks), (HISTORY_MD, history), (README_MD, render_readme()))
                 if not p.exists() or p.read_text() != text]
        if stale:
            raise SystemExit(f"{', '.join(stale)} differ from `python -m benchmarks.report`; run it")
        if problem := stale_records():
            raise SystemExit(problem)
        return
    update_section("summary")
    print(f"wrote {BENCHMARKS_MD.name}, {HISTORY_MD.name} and README.md's headline block")


if __name__ == "__main__":
    main()
