"""GPU check (issue 16): one prepared run on a lent GPU, random weights, synthetic 224×224 images.

Sections, in priority order (each writes the JSON when it ends, so a run stopped by its time limit keeps
what it measured; a section that fails records its error and the next one runs):

* ``deit_small``: DeiT-S, W4A8, the paper-default search (P = 10, K = 3, population 15, 1,000 calibration
  images in batches of 100), eager, timed end to end (calibration + teacher outputs + search; data loading
  and model creation not included) → ``deit_small_search_seconds``. Also quantized/float forward time and
  cached/full candidate evaluation time.
* ``vit_base_memory``: ViT-B at calibration batch 100: peak GPU memory of calibration and of one search
  pass (the stage-input cache takes up to half the free memory by design).
* ``matmul_precision``: DeiT-S calibrated and searched (one pass) under ``highest`` (fp32) and ``high``
  (TF32): calibrated scales compared, fitness and time.
* ``compiled``: DeiT-S with ``torch.compile`` (inductor): whole-model forward compiled (compile seconds,
  quantized/float ratio, difference to eager), then the paper-default search with compiled suffixes,
  timed end to end, compile warm-up separated, final scales compared with the eager search.
* ``models``: the nine models at W4A8: calibration, teacher and candidate-evaluation times, and the
  paper-default search time projected from them (for DeiT-S the projection is checked against the
  measured search).

    python -m benchmarks.gpu_check --out $OUT/gpu_check.json              # on the GPU machine
    python -m benchmarks.gpu_check --quick --out /tmp/gpu_check.json      # CPU smoke test of the script
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from evolq_pl import QuantConfig, calibrate, create_quant_model, search_units
from evolq_pl.models.random_weights import randomize_
from evolq_pl.quant import quant_disabled
from evolq_pl.quant.quantizer import UniformQuantizer
from evolq_pl.search import FitnessEvaluator, SearchConfig, SearchDriver

EAGER = SearchConfig(compile_backend=None)  # the eager sections stay eager whatever "auto" would decide
NINE = ("vit_base_patch16_224", "deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224",
        "levit_128s", "levit_128", "levit_192", "levit_256", "levit_384")


@dataclass
class Run:
    """Settings and results shared by the sections."""

    device: torch.device
    images: int
    batch: int
    quick: bool
    backend: str
    deadline: float
    out: Path
    reserve: float
    models: list[str]
    model_compile: bool
    result: dict[str, Any] = field(default_factory=dict)
    _batches: list[torch.Tensor] | None = None
    snapshots: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def write(self) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.result, indent=2) + "\n")
        tmp.replace(self.out)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def clock(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """Seconds of one call, device work included, and its result."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


def repeat(fn: Callable[[], Any], device: torch.device, n: int = 5) -> dict[str, float]:
    """Median and spread (min, max) of ``n`` timed calls after one warm-up call."""
    fn()
    times = [clock(fn, device)[0] for _ in range(n)]
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeats": n}


def peak_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def model_kwargs(name: str, quick: bool) -> dict[str, Any]:
    """Reduced depth for the CPU smoke test (ViT/DeiT only; LeViT is small already)."""
    return {"depth": 2} if quick and not name.startswith("levit") else {}


def make_batches(run: Run) -> list[torch.Tensor]:
    """The calibration images (seeded, made once and shared by every section)."""
    if run._batches is None:
        g = torch.Generator().manual_seed(0)
        n, b = run.images, run.batch
        run._batches = [torch.randn(min(b, n - i), 3, 224, 224, generator=g).to(run.device) for i in range(0, n, b)]
    return run._batches


def build(name: str, run: Run, w_bits: int = 4) -> torch.nn.Module:
    model = create_quant_model(name, QuantConfig(w_bits=w_bits), **model_kwargs(name, run.quick))
    return randomize_(model).to(run.device)


def scales(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: m.scale.detach().clone() for n, m in model.named_modules() if isinstance(m, UniformQuantizer)}


def compare_scales(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, Any]:
    rel = {k: ((a[k] - b[k]).abs() / a[k].abs().clamp_min(1e-30)).max().item() for k in a}
    worst = max(rel, key=rel.get)
    return {"quantizers": len(rel), "quantizers_differing": sum(r > 0 for r in rel.values()),
            "max_rel_diff": rel[worst], "max_rel_diff_quantizer": worst,
            "identical": all(torch.equal(a[k], b[k]) for k in a)}


def calibrated(name: str, run: Run, batches: list[torch.Tensor]) -> tuple[torch.nn.Module, dict[str, Any]]:
    model = build(name, run)
    reset_peak(run.device)
    calib_s, _ = clock(lambda: calibrate(model, batches), run.device)
    return model, {"calibration_s": calib_s, "calibration_peak_gb": peak_gb(run.device)}


def paper_search(model: torch.nn.Module, ev: FitnessEvaluator, run: Run, cfg: SearchConfig,
                 on_eval: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """The search driver (as the Lightning module runs it), timed; ``on_eval(unit index, seconds)`` sees every
    candidate evaluation."""
    units = search_units(model)
    index = {id(u): i for i, u in enumerate(units)}

    def evaluate(unit=None):  # noqa: ANN001, ANN202
        t, f = clock(lambda: ev(unit), run.device)
        if unit is not None and on_eval is not None:
            on_eval(index[id(unit)], t)
        return f

    evaluate.plan = ev.plan  # type: ignore[attr-defined]  # the driver settles compile_backend="auto" through it
    driver = SearchDriver(units, cfg, evaluate)  # type: ignore[arg-type]
    out: dict[str, Any] = {}

    def loop() -> float:  # the initial evaluation is part of the search's time, as in a Lightning run
        out["init_fitness"] = driver.start()
        return driver.run()

    reset_peak(run.device)
    out["search_s"], out["final_fitness"] = clock(loop, run.device)
    out.update(evaluations=driver.evaluations, rejected=driver.search.rejected, search_peak_gb=peak_gb(run.device),
               stopped_early=driver.search.exhausted, passes=cfg.passes, cycles=cfg.cycles, population=cfg.population)
    return out


def eval_times(model: torch.nn.Module, ev: FitnessEvaluator, run: Run) -> dict[str, Any]:
    """One full-forward evaluation (median of 3) and one cached evaluation per unit (after a warm-up)."""
    full = FitnessEvaluator(model, ev.batches, EAGER, use_cache=False, teacher=ev.teacher)
    full_t = repeat(full, run.device, 3)["median_s"]
    per_unit = []
    for unit in search_units(model):
        ev(unit)
        per_unit.append(clock(lambda: ev(unit), run.device)[0])
    return {"full_eval_s": full_t, "cached_eval_s_per_unit": per_unit,
            "cached_over_full": statistics.mean(per_unit) / full_t}


def section_deit_small(run: Run) -> dict[str, Any]:
    batches = make_batches(run)
    model, out = calibrated("deit_small_patch16_224", run, batches)
    run.snapshots["init"] = scales(model)
    with quant_disabled(model):
        out["float_forward"] = repeat(lambda: [model(b) for b in batches], run.device)
    out["quant_forward"] = repeat(lambda: [model(b) for b in batches], run.device)
    out["quant_over_float"] = out["quant_forward"]["median_s"] / out["float_forward"]["median_s"]
    out["teacher_s"], ev = clock(lambda: FitnessEvaluator(model, batches, EAGER), run.device)
    out.update(eval_times(model, ev, run))
    out["search"] = paper_search(model, ev, run, SearchConfig())
    run.snapshots["eager_final"] = scales(model)
    out["end_to_end_s"] = out["calibration_s"] + out["teacher_s"] + out["search"]["search_s"]
    run.result["deit_small_search_seconds"] = out["end_to_end_s"]
    return out


def section_vit_base_memory(run: Run) -> dict[str, Any]:
    batches = make_batches(run)
    base = torch.cuda.memory_allocated(run.device) / 2**30 if run.device.type == "cuda" else None
    model, out = calibrated("vit_base_patch16_224", run, batches)
    out["allocated_before_gb"] = base
    out["teacher_s"], ev = clock(lambda: FitnessEvaluator(model, batches, EAGER), run.device)
    out["cache_budget_gb"] = ev.budget / 2**30
    out["one_pass"] = paper_search(model, ev, run, SearchConfig(passes=1))
    out["cached_bytes_gb"] = ev.cached_bytes() / 2**30
    out["projected_search_s"] = (out["calibration_s"] + out["teacher_s"]
                                 + out["one_pass"]["search_s"] * SearchConfig().passes)
    return out


def section_matmul_precision(run: Run) -> dict[str, Any]:
    batches, out = make_batches(run), {}
    before = torch.get_float32_matmul_precision()
    try:
        for precision in ("highest", "high"):
            torch.set_float32_matmul_precision(precision)
            model, r = calibrated("deit_small_patch16_224", run, batches)
            run.snapshots[precision] = scales(model)
            with quant_disabled(model):
                r["float_forward_s"] = repeat(lambda: [model(b) for b in batches], run.device, 3)["median_s"]
            r["quant_forward_s"] = repeat(lambda: [model(b) for b in batches], run.device, 3)["median_s"]
            r["teacher_s"], ev = clock(lambda: FitnessEvaluator(model, batches, EAGER), run.device)
            r["one_pass"] = paper_search(model, ev, run, SearchConfig(passes=1))
            out[precision] = r
            del model, ev
            free(run.device)
    finally:
        torch.set_float32_matmul_precision(before)
    out["calibrated_scales_high_vs_highest"] = compare_scales(run.snapshots["highest"], run.snapshots["high"])
    return out


def compiled_forward(model: torch.nn.Module, batches: list[torch.Tensor], run: Run) -> dict[str, Any]:
    """The whole quantized forward compiled: compile seconds, time against the eager float forward, logits."""
    out: dict[str, Any] = {}
    compiled = torch.compile(model, backend=run.backend, dynamic=False)
    out["model_compile_s"], logits = clock(lambda: compiled(batches[0]), run.device)
    eager = model(batches[0])
    out["compiled_vs_eager_logits_max_abs"] = (logits - eager).abs().max().item()
    out["compiled_vs_eager_argmax_agree"] = (logits.argmax(1) == eager.argmax(1)).float().mean().item()
    with quant_disabled(model):
        out["float_forward_s"] = repeat(lambda: [model(b) for b in batches], run.device)["median_s"]
    out["compiled_quant_forward_s"] = repeat(lambda: [compiled(b) for b in batches], run.device)["median_s"]
    out["compiled_quant_over_float"] = out["compiled_quant_forward_s"] / out["float_forward_s"]
    return out


def section_compiled(run: Run) -> dict[str, Any]:
    batches = make_batches(run)
    model, out = calibrated("deit_small_patch16_224", run, batches)
    out["same_init_scales_as_eager"] = compare_scales(run.snapshots["init"], scales(model))["identical"] \
        if "init" in run.snapshots else None
    if run.model_compile:
        out.update(compiled_forward(model, batches, run))
    out["teacher_s"], ev = clock(lambda: FitnessEvaluator(model, batches, SearchConfig(compile_backend=run.backend)), run.device)
    per_unit: dict[int, list[float]] = {}
    cfg = SearchConfig(compile_backend=run.backend, max_seconds=max(run.left() - run.reserve, 30.0))
    out["search"] = s = paper_search(model, ev, run, cfg, on_eval=lambda i, t: per_unit.setdefault(i, []).append(t))
    steady = [statistics.median(ts[1:]) for ts in per_unit.values() if len(ts) > 1]
    out["suffix_compile_s"] = sum(ts[0] - statistics.median(ts[1:]) for ts in per_unit.values() if len(ts) > 1)
    out["compiled_eval_s_mean"] = statistics.mean(steady) if steady else None
    out["compile_fell_back_to_eager"] = ev.compile_fallback  # a failed compile warns and runs eager
    out["compile_seconds"] = ev.compile_seconds
    out["end_to_end_s"] = out["calibration_s"] + out["teacher_s"] + s["search_s"]
    total = len(search_units(model)) * cfg.passes * cfg.cycles
    if s["stopped_early"] and steady and len(per_unit) == len(search_units(model)):
        # every suffix compiled in the first pass; the rest is steady-state evaluations
        out["projected_end_to_end_s"] = out["end_to_end_s"] + (total - s["evaluations"]) * out["compiled_eval_s_mean"]
    if "eager_final" in run.snapshots and not s["stopped_early"]:
        out["same_final_scales_as_eager"] = compare_scales(run.snapshots["eager_final"], scales(model))
    run.result["deit_small_search_seconds_compiled"] = out["end_to_end_s"] if not s["stopped_early"] else None
    return out


def section_models(run: Run) -> dict[str, Any]:
    rows = {}
    cfg = SearchConfig()
    for name in run.models[:2] if run.quick else run.models:
        if run.left() < 25:
            rows[name] = {"skipped": "time limit"}
            continue
        batches = make_batches(run)
        model, r = calibrated(name, run, batches)
        r["teacher_s"], ev = clock(lambda: FitnessEvaluator(model, batches, EAGER), run.device)
        r.update(eval_times(model, ev, run))
        r["units"] = len(r["cached_eval_s_per_unit"])
        r["projected_search_s"] = (r["calibration_s"] + r["teacher_s"]
                                   + cfg.passes * cfg.cycles * sum(r["cached_eval_s_per_unit"]))
        r["peak_gb"] = peak_gb(run.device)
        rows[name] = r
        run.result.setdefault("sections", {})["models"] = rows
        run.write()
        del model, ev, batches
        free(run.device)
    return rows


SECTIONS: dict[str, Callable[[Run], dict[str, Any]]] = {
    "deit_small": section_deit_small, "vit_base_memory": section_vit_base_memory,
    "matmul_precision": section_matmul_precision, "compiled": section_compiled, "models": section_models,
}


def environment(device: torch.device) -> dict[str, Any]:
    import timm

    env = {"torch": torch.__version__, "timm": timm.__version__, "cuda": torch.version.cuda, "matmul_precision": torch.get_float32_matmul_precision(),
           "device": "cpu", "threads": torch.get_num_threads()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update(device=p.name, memory_gb=p.total_memory / 2**30, capability=f"{p.major}.{p.minor}",
                   cudnn=torch.backends.cudnn.version())
    return env


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--backend", default="inductor")
    p.add_argument("--budget-s", type=float, default=450.0, help="time limit of the whole run (sections check it)")
    p.add_argument("--reserve-s", type=float, default=140.0,
                   help="time the compiled search leaves for the sections after it (it stops early, and says so)")
    p.add_argument("--models", nargs="+", default=list(NINE), help="models of the 'models' section")
    p.add_argument("--no-model-compile", action="store_true", help="compiled section: skip the whole-model compile")
    p.add_argument("--quick", action="store_true", help="CPU smoke test: 2-block ViTs, 8 images, two models")
    p.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    a = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    images, batch = (8, 4) if a.quick else (a.images, a.batch)
    run = Run(device, images, batch, a.quick, a.backend, time.perf_counter() + a.budget_s, a.out, a.reserve_s,
              a.models, not a.no_model_compile)
    run.result = {"environment": environment(device), "images": images, "batch": batch, "quick": a.quick,
                  "w_bits": 4, "a_bits": 8, "weights": "random (randomize_), synthetic N(0,1) images", "sections": {}}
    run.write()
    for name in a.sections:
        if run.left() < 20:
            run.result["sections"][name] = {"skipped": "time limit"}
            continue
        start = time.perf_counter()
        try:
            with torch.no_grad():
                run.result["sections"][name] = SECTIONS[name](run)
        except Exception as err:  # record and go on: the other sections' numbers still count
            run.result["sections"][name] = {"error": f"{type(err).__name__}: {err}",
                                            "traceback": traceback.format_exc(limit=6)}
        run.result["sections"][name]["section_s"] = time.perf_counter() - start
        run.write()
        print(f"[gpu_check] {name}: {time.perf_counter() - start:.1f} s", flush=True)
        free(device)
    print(json.dumps({k: v for k, v in run.result.items() if k != "sections"}, indent=1))


if __name__ == "__main__":
    main()
