"""BENCHMARKS.md, BENCHMARKS_HISTORY.md and README's generated blocks, written wholly from
``benchmarks/results/*.json``; ``--check`` says whether the committed files and cited records are current.

    python -m benchmarks.report            # rewrite them
    python -m benchmarks.report --check    # exit 1 if a file differs or a cited record is stale

The top of ``benchmarks/``: it imports every suite for its section; a suite that measured something asks for
the rewrite through this command (``benchmarks.common.update_section``), never by importing it.
"""
from __future__ import annotations

import argparse
import statistics
from typing import Any, Callable

from benchmarks import (accuracy, calibration_memory, checkpoint_cost, code_size, error_budget, export, fingerprint,
                        gpu_report, landscape, reference_parity, search_speed)
from benchmarks.common import BENCHMARKS_MD, HISTORY_MD, README_MD, load, replace_block, table
from evolq_pl.models.reference import reference_models
from evolq_pl.report.stats import describe, verdict

HEADER = ("# Benchmarks\n\nWritten wholly by `python -m benchmarks.report` from `benchmarks/results/*.json` (each "
          "section names the script that measured it, its commit, machine and thread counts; the summary is "
          "generated from the same records). Records measured on earlier reference checkpoints are in "
          "BENCHMARKS_HISTORY.md.\n")


def _with_before(suite: Any, name: str) -> Callable[[], str | None]:
    """``suite.section`` of results/<name>.json beside results/<name>_before.json (the same measurement at an
    earlier commit), when measured."""
    def render() -> str | None:
        data = load(name)
        return None if data is None else suite.section(data, load(f"{name}_before"))
    return render


def _sections() -> dict[str, Callable[[], str | None]]:
    """Section name → its markdown from the stored JSON (None: never measured), in BENCHMARKS.md order."""
    acc, speed, land, exp, budget, gpu = (load(n) for n in ("accuracy", "search_speed", "landscape", "export",
                                                              "error_budget", "gpu_check"))
    return {
        "summary": summary,
        "accuracy": lambda: acc and accuracy.report(acc["records"]),
        "error_budget": lambda: budget and error_budget.report(budget["records"], budget["machine"]),
        "search_speed": lambda: speed and search_speed.section(speed),
        "calibration_memory": _with_before(calibration_memory, "calibration_memory"),
        "checkpoint_cost": _with_before(checkpoint_cost, "checkpoint_cost"),
        "code_size": _with_before(code_size, "code_size"),
        "reference_parity": _with_before(reference_parity, "reference_parity"),
        "export": lambda: exp and export.report(exp["records"], exp["machine"], exp.get("imagenet_sizes"),
                                                       exp.get("imagenet_sizes_machine")),
        "landscape": lambda: land and landscape.section(land),
        "gpu": lambda: gpu and gpu_report.benchmarks_md(gpu, gpu["commit"], gpu.get("date", "?")),
    }


def render_benchmarks() -> tuple[str, str]:
    """(BENCHMARKS.md, BENCHMARKS_HISTORY.md) from the stored JSON."""
    blocks = [HEADER]
    for name, render in _sections().items():
        md = render()
        if md:
            blocks.append(f"<!-- {name}:start -->\n{md.strip()}\n<!-- {name}:end -->\n")
    acc = load("accuracy")
    history = "# Benchmark history\n\nWritten by `python -m benchmarks.report`.\n\n"
    if acc is not None:
        history += accuracy.history(acc["records"], acc.get("superseded", []))
    fixed = load("landscape_fixed_radius")
    if fixed is not None:
        history += "\n" + landscape.history(fixed)
    return "\n".join(blocks), history.strip() + "\n"


def _accuracy_summary(records: dict[str, dict[str, Any]]) -> list[str]:
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
    try:
        choice = accuracy.chosen_preset(records)
    except ValueError:
        return []
    name = choice["preset"]
    tests = accuracy.preset_comparison(records, name)
    found = "; ".join(f"{ref} W3A8 Δ {describe(p)} ({p['n_seeds']} seeds): {verdict(p)}" for ref, p in tests.items())
    used = {s for p in tests.values() for s in p["seeds"]}
    others = sorted({r["spec"]["suite"] for r in records.values()
                     if r["spec"]["suite"] != "preset-test" and r["spec"]["seed"] in used})
    seeds = (", ".join(map(str, sorted(used))) or "none yet") + (
        f"; also run by the {', '.join(others)} suites" if others else ", run by no other suite")
    return ["", f"**A preset beyond the paper** (`configs/presets/beyond_paper.yaml`: {name}, "
            f"`{accuracy.VARIANTS[name]}`), chosen on the validation split among {len(accuracy.PRESET_CANDIDATES)} "
            f"candidates (mean Δ {choice['val_delta_mean'][name]['delta_mean']:+.2f} over the paper's search there), "
            f"then against the paper's search on test on seeds {seeds}, each seed's two "
            f"arms by one command at one commit, paired by seed (Holm over the two models): "
            + (found or "not measured on test yet") + "."]


def render_readme() -> str:
    """README.md with its generated blocks regenerated: the headline (the accuracy verdicts and the demo), the
    GPU run times and the shipped reference models."""
    acc, demo, gpu = load("accuracy"), load("demo"), load("gpu_check")
    lines = _accuracy_summary(acc["records"])[1:] if acc is not None else ["Accuracy: not measured."]
    if demo is not None:
        lines += ["", _demo_line(demo)]
    text = replace_block(README_MD.read_text(), "headline", "\n".join(lines))
    text = replace_block(text, "gpu_times", gpu_report.readme_md(gpu) if gpu is not None else "GPU: not measured.")
    return replace_block(text, "reference_models", _reference_models_table())


def _reference_models_table() -> str:
    """The shipped reference classifiers as ``manifest.json`` (written by ``benchmarks/export_reference.py``)
    records them."""
    shown = lambda v: "/".join(map(str, v)) if isinstance(v, list) else v  # noqa: E731
    rows = [[name, f"timm `{m['model_name']}`: " + ", ".join(f"{k} {shown(v)}" for k, v in m["model_kwargs"].items()),
             f"`evolq_pl/reference_models/{m['file']}`", f"`{m['sha256']}`", f"{m['top1_test']:.2f} %"]
            for name, m in sorted(reference_models().items())]
    return table(["name", "architecture", "file", "sha256", "float test top-1"], rows)


def _demo_line(demo: dict[str, Any]) -> str:
    minutes, seconds = divmod(round(demo["wall_seconds"]), 60)
    return (f"The demo (`{demo['command']}`) took {minutes} min {seconds:02d} s wall on {demo['machine']['cores']} "
            f"CPU cores at `{demo['machine']['commit']}`: {demo['model']} W{demo['w_bits']}A{demo['a_bits']} seed "
            f"{demo['seed']}, float {demo['top1_float']:.2f}, init {demo['top1_init']:.2f}, Evol-Q "
            f"{demo['top1_evolq']:.2f} top-1 (one seed: an example, not a result).")


def summary() -> str:
    """The summary, generated from the records (every figure is in a section below)."""
    lines = ["## Summary", "", "Every figure below is generated from the sections that follow."]
    acc = load("accuracy")
    if acc is not None:
        lines += _accuracy_summary(acc["records"])
    budget = load("error_budget")
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
    speed = load("search_speed")
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
    land = load("landscape")
    if land is not None:
        claims = [c for family in landscape.FAMILIES for c in landscape.bit_claims(land["records"], family)]
        lines += ["", "Loss landscape (radius tied to the bit width, " f"{land['args']['directions']} directions):",
                  "", *(f"- {c}." for c in claims)]
    mem = load("calibration_memory")
    if mem is not None:
        live = f"; live tensor bytes {mem['live_calib_over_forward']:.2f}×" if "live_calib_over_forward" in mem else ""
        lines += ["", f"Calibration memory ({mem['model']}, {mem['batches']} batches of {mem['batch']}): peak "
                  f"{mem['measure'].replace('_', ' ')} {mem['calib_over_forward']:.2f}× a float forward{live}."]
    parity = load("reference_parity")
    if parity is not None:
        equal = [name for name, r in parity.items() if r["logits_bitwise_equal"]]
        lines += ["", f"Parity with the published code: logits bit for bit equal on {', '.join(equal) or 'none'} "
                  f"(of {len(parity)} models checked)."]
    exp = load("export")
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
    gpu = load("gpu_check")
    lines += ["", f"GPU: measured {gpu.get('date', '?')} at `{gpu['commit']}` on {gpu['environment']['device']} "
              "(section below)." if gpu is not None else "GPU: not measured."]
    demo = load("demo")
    if demo is not None:
        lines += ["", _demo_line(demo)]
    return "\n".join(lines)


def stale_records(current: str | None = None) -> str | None:
    """Why the cited accuracy records do not hold for the working tree (None: every one does): records that
    ``benchmarks.fingerprint.holds`` refuses (measured by code of another fingerprint)."""
    acc = load("accuracy")
    if acc is None:
        return None
    if current is None:
        current = fingerprint.fingerprint()
    refused = [r for r in acc["records"].values() if accuracy.is_current(r) and not fingerprint.holds(r, current)]
    if not refused:
        return None
    stale: dict[str, set[str]] = {}
    for r in refused:
        stale.setdefault(r["spec"]["suite"], set()).add(r.get("machine", {}).get("commit", "?"))
    where = "; ".join(f"{suite} (measured at {', '.join(sorted(c))})" for suite, c in sorted(stale.items()))
    return (f"{len(refused)} cited accuracy records were measured by code that computes other bits than the "
            f"working tree ({current} on {fingerprint.platform_id()}): {where}; rerun them: "
            f"python -m benchmarks.accuracy --suite "
            f"{' '.join(sorted(stale))} --stale")


def write_all(section: str | None = None) -> None:
    """Rewrite BENCHMARKS.md, BENCHMARKS_HISTORY.md and README's generated blocks; ``section``: the one a benchmark
    just measured, which must be among them."""
    benchmarks, history = render_benchmarks()
    if section is not None and f"<!-- {section}:start -->" not in benchmarks:
        raise SystemExit(f"--section={section!r}: not among the sections of BENCHMARKS.md "
                         f"({', '.join(_sections())})")
    BENCHMARKS_MD.write_text(benchmarks)
    HISTORY_MD.write_text(history)
    README_MD.write_text(render_readme())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if the files differ from the regenerated ones "
                        "or a cited accuracy record does not hold for the working tree")
    parser.add_argument("--section", help="the section a benchmark just measured (refused when unknown)")
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
    write_all(args.section)
    print(f"wrote {BENCHMARKS_MD.name}, {HISTORY_MD.name} and README.md's generated blocks")


if __name__ == "__main__":
    main()
