"""Merge the JSON files written by ``benchmarks.gpu_check`` runs into ``benchmarks/results/gpu_check.json`` and
write the GPU section of BENCHMARKS.md and the expected-run-time table of README.md from it.

    python -m benchmarks.gpu_report run1.json [run2.json ...] --commit 16b9551 --date 2026-11-27

A later run fills the sections (and the rows of ``models``) that an earlier one skipped, failed or lacked;
each filled part records which run measured it.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, table, update_section, write_json



def measured(part: Any) -> bool:
    return isinstance(part, dict) and bool(part) and "skipped" not in part and "error" not in part


def merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out = json.loads(json.dumps(runs[0]))
    out["runs"] = [{"run": i + 1, "environment": r["environment"]} for i, r in enumerate(runs)]
    for i, run in enumerate(runs[1:], start=2):
        for name, part in run["sections"].items():
            have = out["sections"].get(name)
            if name == "models" and isinstance(have, dict):
                for model, row in part.items():
                    if measured(row) and not measured(have.get(model)):
                        have[model] = {**row, "run": i}
            elif measured(part) and not measured(have):
                out["sections"][name] = {**part, "run": i}
    return out


def spread(deit: dict[str, Any]) -> str:
    """(max − min) / median of the DeiT-S forward timings, as measured."""
    if not measured(deit):
        return "spread not measured"
    worst = max((t["max_s"] - t["min_s"]) / t["median_s"] for t in (deit["float_forward"], deit["quant_forward"]))
    return f"DeiT-S forwards spread (max − min) / median ≤ {100 * worst:.2f} %"


def f(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def model_rows(models: dict[str, Any], searched: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for name, r in models.items():
        if not isinstance(r, dict):  # bookkeeping keys (section_s)
            continue
        if not measured(r):
            rows.append([name, "not measured (run's time limit)", "", "", "", ""])
            continue
        search = f(r["projected_search_s"], 0)
        if name == "deit_small_patch16_224" and searched:
            search += f" (measured: {searched['end_to_end_s']:.0f})"
        rows.append([name + (f" (run {r['run']})" if "run" in r else ""), r["units"], f(r["calibration_s"]), f(r["full_eval_s"], 3), search,
                     f(r["calibration_peak_gb"])])
    return rows


def benchmarks_md(res: dict[str, Any], commit: str, date: str) -> str:
    env, s = res["environment"], res["sections"]
    deit, vitb, mp, comp = s.get("deit_small", {}), s.get("vit_base_memory", {}), s.get("matmul_precision", {}), s.get("compiled", {})
    md = [f"## GPU performance\n", *([user_path_md(res["user_path"]), ""] if "user_path" in res else []),
          f"`benchmarks/gpu_check.sh` on one **{env['device']}** ({env['memory_gb']:.0f} GiB), torch {env['torch']}, "
          f"CUDA {env['cuda']}, timm {env['timm']}; measured {date} at commit `{commit}` in {len(res['runs'])} runs "
          f"on two machines of that kind (a row from run 2 says so). Random weights (`randomize_`), "
          f"{res['images']} synthetic N(0, 1) images at 224 px in batches of {res['batch']}, W{res['w_bits']}A{res['a_bits']}, "
          f"fp32 matmuls (`highest`) unless stated. Seconds are wall time with the GPU synchronised; "
          f"\"end to end\" = calibration + teacher outputs + search (no data loading, no model creation). "
          f"Timings are one run each (forwards: median of 5 after a warm-up; {spread(deit)}).\n"]
    if measured(deit):
        se = deit["search"]
        md += ["### DeiT-S, paper-default search (P = 10, K = 3, population 15), eager\n",
               table(["measure", "measured", "target"], [
                   ["end to end, s (`deit_small_search_seconds`)", f(res["deit_small_search_seconds"]), "≤ 300"],
                   ["  calibration / teacher / search, s", f"{deit['calibration_s']:.1f} / {deit['teacher_s']:.2f} / "
                    f"{se['search_s']:.1f} ({se['evaluations']} evaluations)", ""],
                   ["float forward, 1,000 images, s", f(deit["float_forward"]["median_s"], 3), ""],
                   ["quantized forward (eager), s", f(deit["quant_forward"]["median_s"], 3), ""],
                   ["quantized / float (eager)", f(deit["quant_over_float"], 2), ""],
                   ["cached / full-forward candidate evaluation (mean over 12 units)", f(deit["cached_over_full"], 3), ""],
                   ["peak GPU memory: calibration / search, GiB",
                    f"{deit['calibration_peak_gb']:.1f} / {se['search_peak_gb']:.1f}", ""],
                   ["fitness init → final", f"{se['init_fitness']:.4f} → {se['final_fitness']:.4f}", ""]]), ""]
    if measured(comp):
        se = comp["search"]
        md += ["### `torch.compile` (inductor), DeiT-S\n",
               table(["measure", "measured", "target"], [
                   ["whole quantized forward: compile warm-up, s", f(comp.get("model_compile_s")), ""],
                   ["compiled quantized forward, 1,000 images, s", f(comp.get("compiled_quant_forward_s"), 3), ""],
                   ["compiled quantized / eager float", f(comp.get("compiled_quant_over_float"), 2), "≤ 1.2"],
                   ["compiled vs eager logits: max abs Δ / argmax agreement (batch of 100)",
                    f"{comp['compiled_vs_eager_logits_max_abs']:.3f} / {100 * comp['compiled_vs_eager_argmax_agree']:.0f} %", "equal"],
                   ["compiled search: evaluations done before the run's time cap", f"{se['evaluations']} of 360", "360"],
                   [f"  its wall time ({min(-(-se['evaluations'] // se['cycles']), 12)} units visited, each suffix "
                    "compiled on its first visit), s", f(se["search_s"]), ""],
                   ["  compile warm-up of those suffixes, s", f(comp["suffix_compile_s"]), ""],
                   ["  steady compiled evaluation (those short suffixes), s", f(comp["compiled_eval_s_mean"], 3), ""]]),
               "\nThe compiled search was **not measured to its end**: the run's time cap stopped it after "
               f"{se['evaluations']} evaluations (`deit_small_search_seconds_compiled` is null). The whole forward "
               f"compiles to the float forward's time, but at `{commit}` (before the exact linear/conv ops and "
               "inductor settings of the user-path run above) compiled logits were **not equal** to eager ones "
               "(reassociated arithmetic moves values across rounding boundaries), so a compiled search is not "
               "the eager search's trajectory.\n"]
    if measured(vitb):
        se = vitb["one_pass"]
        md += ["### ViT-B memory (calibration batch 100)\n",
               table(["measure", "measured"], [
                   ["peak GPU memory, calibration, GiB (1,000 resident images = "
                    f"{vitb['allocated_before_gb']:.1f} GiB included)", f(vitb["calibration_peak_gb"], 2)],
                   ["peak GPU memory, one search pass, GiB", f(se["search_peak_gb"], 2)],
                   ["calibration, s", f(vitb["calibration_s"])],
                   ["one search pass (36 evaluations), s", f(se["search_s"])],
                   ["paper-default search projected from it (10 passes), end to end, s", f(vitb["projected_search_s"], 0)]]), ""]
    if measured(mp):
        c = mp["calibrated_scales_high_vs_highest"]
        md += ["### `matmul_precision`: highest (fp32) vs high (TF32), DeiT-S, one search pass\n",
               table(["precision", "calibration s", "float fwd s", "quant fwd s", "one pass s", "fitness init", "fitness after 1 pass"],
                     [[p, f(r["calibration_s"]), f(r["float_forward_s"], 3), f(r["quant_forward_s"], 3),
                       f(r["one_pass"]["search_s"]), f(r["one_pass"]["init_fitness"], 5), f(r["one_pass"]["final_fitness"], 5)]
                      for p, r in mp.items() if p in ("highest", "high")]),
               f"\nCalibrated scales under TF32: {c['quantizers_differing']} of {c['quantizers']} quantizers differ "
               f"from fp32, largest relative difference {c['max_rel_diff']:.3g}"
               f"{' (' + c['max_rel_diff_quantizer'] + ')' if 'max_rel_diff_quantizer' in c else ' (which quantizer was not recorded in this run)'}. "
               "The fitness moves in the fifth digit; the effect on top-1 needs real weights and ImageNet "
               "(not measured). `highest` stays the default.\n"]
    if measured(s.get("models")) or isinstance(s.get("models"), dict):
        md += ["### Nine models, W4A8, paper-default search time (eager)\n",
               "Projected = calibration + teacher + 30 × (one cached evaluation per unit, summed over units); "
               "for DeiT-S the projection is checked against the measured search.\n",
               table(["model", "units", "calibration s", "full evaluation s", "search end to end s (projected)",
                      "calibration peak GiB"], model_rows(s["models"], deit)), ""]
    return "\n".join(md)


def user_path_record(run: dict[str, Any], warm: dict[str, Any] | None, commit: str, date: str) -> dict[str, Any]:
    """gpu_check.json's ``user_path``: a ``benchmarks.gpu_user_path`` run (and a rerun of its default fit on the same
    machine, warm compile cache) condensed to what the report shows."""
    def fit(r: dict[str, Any]) -> dict[str, Any]:
        res = r["results"]
        return {"command": r["command"], "wall_seconds": r["wall_seconds"], "checkpoint_bytes": r.get("checkpoint_bytes"),
                **{k: res.get(k) for k in ("phase_seconds", "search_seconds", "compile_backend", "compile_seconds",
                                           "compile_decision", "fitness_init", "fitness_final")}}
    diag = {label: {"options": d["options"], "differing": {n: r for n, r in d["rows"].items() if r.get("equal") is False}}
            for label, d in run["compiled_vs_eager"].items()}
    fits = {k.removeprefix("fit_"): fit(v) for k, v in run.items() if k.startswith("fit_") and "results" in v}
    if warm is not None and "results" in warm:
        fits["default_warm_cache"] = fit(warm)
    return {**run["user_path"], "device": run["device"], "torch": run["torch"], "commit": commit, "date": date,
            "float_floor_s": run["float_floor"]["floor_s"], "float_full_evaluation_s": run["float_floor"]["full_evaluation_s"],
            "fits": fits, "compiled_vs_eager": diag}


def user_path_md(up: dict[str, Any]) -> str:
    rows = []
    for name, r in up["fits"].items():
        ph = r["phase_seconds"]
        d = r.get("compile_decision") or {}
        rows.append([name, r["compile_backend"] or "eager", f(r["wall_seconds"]), f(ph["search"]),
                     f(ph["search"] / up["float_floor_s"], 2), f(d.get("compile_s")),
                     " / ".join(f(ph[k]) for k in ("setup", "data", "calibration", "teacher", "checkpoints", "evaluation")),
                     f"{r['checkpoint_bytes']:,}", f"{r['fitness_final']:.6f}"])
    default = up["compiled_vs_eager"].get("default", {})
    differing = ", ".join(f"{n} ({r['differing']} values, ≤ {r['max_abs']:.3g})" for n, r in default.get("differing", {}).items())
    exact = up["compiled_vs_eager"].get("exact", {})
    return (f"### The user path: DeiT-S W4A8 by `evolq-pl fit`\n\n`benchmarks/gpu_check.sh` → "
            f"`benchmarks.gpu_user_path` on one **{up['device']}**, torch {up['torch']}, measured {up['date']} at "
            f"commit `{up['commit']}`: the shipped configs (`configs/imagenet/base.yaml` + `deit_small_w4a8.yaml`), "
            "paper-default search (360 evaluations), float weights from a local checkpoint (random, `randomize_`), "
            "a synthetic ImageFolder of 1,000 + 500 256-px JPEGs, default settings (`default`: `compile_backend: "
            "auto`), then the path auto did not take, forced (`eager`), and the default run again on the same "
            "machine (`default_warm_cache`: inductor's cache warm). Wall = the `evolq-pl fit` process; phases from "
            "results.json. Float floor = the same evaluations (one full, then K per unit per pass from the "
            f"cached unit input) timed on the float model: {up['float_floor_s']:.1f} s (a full float evaluation of "
            f"1,000 images {up['float_full_evaluation_s']:.3f} s).\n\n"
            + table(["run", "path", "wall s", "search s", "search / float floor", "compile s",
                     "setup / data / calibration / teacher / checkpoints / evaluation s", "checkpoint bytes / step",
                     "final fitness"], rows)
            + f"\n\nCompiled scales = eager scales after the full search: **{up['compiled_scales_equal']}** "
            f"({up['scales_differing']} of {up['scales']} differ). Targets: wall ≤ 90 s, search ≤ 1.3× the float "
            f"floor — **not met** ({up['wall_seconds']:.0f} s, {up['search_over_float_floor']:.2f}×). Per stage and "
            "per module (the first block, each compiled alone on its eager input): with inductor's default settings "
            f"these differ from eager: {differing or 'none'}; with `evolq_pl.quant.exact.inductor_options()` "
            f"({', '.join(f'`{k}`' for k in exact.get('options', {}))}) none "
            f"{'differs' if not exact.get('differing') else 'but ' + ', '.join(exact['differing'])}.\n")


def readme_md(res: dict[str, Any]) -> str:
    if "user_path" in res:
        up = res["user_path"]
        rows = [[name, r["compile_backend"] or "eager", f(r["wall_seconds"] / 60, 1), f(r["phase_seconds"]["search"])]
                for name, r in up["fits"].items()]
        return (f"Measured run time on one {up['device']} (DeiT-S W4A8, paper-default search, `evolq-pl fit` with "
                "the shipped ImageNet configs and default settings, 1,000 calibration + 500 evaluation images; "
                f"random weights and synthetic images, `benchmarks/gpu_check.sh` at `{up['commit']}`; BENCHMARKS.md, "
                "GPU section — the other models there are projections, not runs):\n\n"
                + table(["run", "path", "minutes (whole process)", "search s"], rows))
    return _projected_readme_md(res)


def _projected_readme_md(res: dict[str, Any]) -> str:
    env, models = res["environment"], res["sections"].get("models", {})
    deit = res["sections"].get("deit_small", {})
    rows = []
    for name, r in models.items():
        if isinstance(r, dict) and measured(r):
            seconds = deit["end_to_end_s"] if name == "deit_small_patch16_224" and measured(deit) else r["projected_search_s"]
            rows.append([name, f(seconds / 60, 1), f(r["calibration_peak_gb"])])
    return (f"Expected run time on one {env['device']} (eager, fp32, W4A8, P = 10, K = 3, 1,000 calibration images; "
            "calibration + search, data loading excluded), measured with random weights by "
            "`benchmarks/gpu_check.sh` (BENCHMARKS.md, GPU section; DeiT-S measured end to end "
            f"{res['deit_small_search_seconds']:.0f} s, the others projected from timed candidate evaluations):\n\n"
            + table(["model", "minutes", "peak GPU memory GiB (calibration)"], rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", type=Path, help="benchmarks.gpu_check JSON files (none: keep the stored ones)")
    p.add_argument("--commit", required=True, help="commit the runs measured")
    p.add_argument("--date", required=True)
    p.add_argument("--user-path", type=Path, help="a benchmarks.gpu_user_path JSON file")
    p.add_argument("--user-path-warm", type=Path, help="its default fit rerun on the same machine (warm cache)")
    a = p.parse_args()
    if a.runs:
        res = merge([json.loads(r.read_text()) for r in a.runs])
        res.update(commit=a.commit, date=a.date)
    else:
        res = json.loads((RESULTS / "gpu_check.json").read_text())
    if a.user_path:
        warm = json.loads(a.user_path_warm.read_text()) if a.user_path_warm else None
        res["user_path"] = user_path_record(json.loads(a.user_path.read_text()), warm, a.commit, a.date)
    write_json("gpu_check", res)
    update_section("gpu")  # README's gpu_times block too (``readme_md``)


if __name__ == "__main__":
    main()
