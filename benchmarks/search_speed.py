"""Search speed on a 12-block DeiT-shaped model (random weights), eager and compiled side by side in one run,
with torch pinned to 1 and then 2 threads:

(a) cached candidate evaluation / full-forward evaluation, averaged over units (target ≤ 0.6);
(b) quantized / float forward: eager (target ≤ 2.0 on CPU) and compiled with inductor (target ≤ 1.3);
(c) whole search: eager with prefix caching vs eager full-forward evaluation (target ≥ 1.6×), and compiled with
    caching vs eager full forward, its cold compile warm-up included (target ≥ 2.5×); every search must end on
    the same scales.

    python -m benchmarks.search_speed [--calib 200] [--passes 2] [--repeats 5] [--threads 1 2]

Forward timings: median of ``--repeats`` after a warm-up, with the spread (min–max); searches run once each.
Each thread count runs in its own process with an empty inductor cache, so ``compile_seconds`` is a cold
compile; the compiled search then runs again with the cache it filled (``*_warm_cache``: what a second run
on the same machine, e.g. the next seed, pays).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

import torch

from benchmarks.common import machine, machine_line, table, update_section, write_json
from evolq_pl import QuantConfig, calibrate, create_quant_model, search_units
from evolq_pl.models.factory import create_float_model
from evolq_pl.search import FitnessEvaluator, SearchConfig, SearchDriver
from evolq_pl.models.random_weights import randomize_

# glibc's allocator pinned for every child: by default its mmap threshold rises with the sizes freed so far, so
# whether a forward's 1–5 MB temporaries come from the heap or from fresh, page-faulted mmaps depends on what the
# process ran before (measured: the same eager forward 440 or 540–710 ms after two calibrations that differ only
# in their temporaries); fixed thresholds make the timings independent of that history
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(256 << 20)}
KW = dict(img_size=28, patch_size=4, in_chans=1, num_classes=10, embed_dim=64, depth=12, num_heads=4)
TARGETS = {"cached_over_full": "≤ 0.6", "quant_over_float": "≤ 2.0 (CPU)", "compiled_quant_over_float": "≤ 1.3 (CPU)",
           "search_speedup": "≥ 1.6×", "compiled_search_speedup": "≥ 2.5×", "same_final_scales": "True"}


def timed(fn: Callable[[], Any], repeats: int) -> dict[str, float]:
    """Median and spread of ``repeats`` timings after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def run_search(model, batches, cfg: SearchConfig, use_cache: bool) -> tuple[float, list[torch.Tensor], float]:
    """(seconds, final scales, compile warm-up seconds) of one search from the model's current scales."""
    torch._dynamo.reset()
    units, start = search_units(model), time.perf_counter()
    evaluator = FitnessEvaluator(model, batches, cfg, use_cache=use_cache)
    SearchDriver(units, cfg, evaluator).run()
    return time.perf_counter() - start, [u.get() for u in units], evaluator.compile_seconds


def measure(model, float_model, batches: list[torch.Tensor], passes: int, repeats: int) -> dict[str, Any]:
    """Every timing at the current torch thread count."""
    eager_cfg, compiled_cfg = SearchConfig(passes=passes, compile_backend=None), \
        SearchConfig(passes=passes, compile_backend="inductor")
    start_state = copy.deepcopy(model.state_dict())
    runs = {}  # first, so the first compiled search meets an empty inductor cache (a cold compile)
    for name, cfg, cache in (("eager_cached", eager_cfg, True), ("eager_full", eager_cfg, False),
                             ("compiled_cached", compiled_cfg, True), ("compiled_cached_warm_cache", compiled_cfg, True)):
        model.load_state_dict(start_state)
        runs[name] = run_search(model, batches, cfg, cache)
    model.load_state_dict(start_state)

    ev = FitnessEvaluator(model, batches, eager_cfg)
    full = timed(lambda: ev(), repeats)
    ratios = [timed(lambda: ev(unit), repeats)["median"] / full["median"] for unit in search_units(model)]
    float_fwd = timed(lambda: [float_model(b) for b in batches], repeats)
    quant_fwd = timed(lambda: [model(b) for b in batches], repeats)
    torch._dynamo.reset()
    compiled_ev = FitnessEvaluator(model, batches, compiled_cfg)
    compiled_fwd = timed(lambda: compiled_ev.outputs(), repeats)  # the warm-up call compiles every stage
    scales = [r[1] for r in runs.values()]
    return {
        "cached_over_full": statistics.mean(ratios), "cached_over_full_per_unit": ratios,
        "quant_over_float": quant_fwd["median"] / float_fwd["median"],
        "compiled_quant_over_float": compiled_fwd["median"] / float_fwd["median"],
        "search_speedup": runs["eager_full"][0] / runs["eager_cached"][0],
        "compiled_search_speedup": runs["eager_full"][0] / runs["compiled_cached"][0],
        "compiled_search_speedup_warm_cache": runs["eager_full"][0] / runs["compiled_cached_warm_cache"][0],
        "compile_seconds": runs["compiled_cached"][2], "compile_seconds_warm_cache": runs["compiled_cached_warm_cache"][2],
        "same_final_scales": all(torch.equal(a, b) for other in scales[1:] for a, b in zip(scales[0], other)),
        "seconds": {"full_eval": full, "float_forward": float_fwd, "quant_forward": quant_fwd,
                    "compiled_quant_forward": compiled_fwd,
                    **{f"search_{name}": r[0] for name, r in runs.items()}},
    }


def _fmt(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    return f"{value:.2f}×" if "speedup" in key else f"{value:.1f} s" if "seconds" in key else f"{value:.2f}"


def section(data: dict) -> str:
    threads = sorted(data["by_threads"], key=int)
    labels = {"cached_over_full": "(a) cached / full-forward candidate evaluation (mean over 12 units)",
              "quant_over_float": "(b) quantized / float forward, eager",
              "compiled_quant_over_float": "(b) quantized / float forward, compiled (inductor)",
              "search_speedup": "(c) search speed-up, eager cached vs eager full forward",
              "compiled_search_speedup": "(c) search speed-up, compiled cached (warm-up included) vs eager full",
              "compile_seconds": "compile warm-up (cold, in the compiled search)",
              "compiled_search_speedup_warm_cache": "(c) the same, compiled from a warm inductor cache",
              "compile_seconds_warm_cache": "compile warm-up from a warm cache",
              "same_final_scales": "the four searches end on the same scales"}
    rows = [[label, *(_fmt(k, data["by_threads"][t][k]) for t in threads), TARGETS.get(k, "-")]
            for k, label in labels.items()]
    raw = []
    for t in threads:
        s = data["by_threads"][t]["seconds"]
        spread = lambda x: f"{x['median'] * 1e3:.0f} ms ({x['min'] * 1e3:.0f}–{x['max'] * 1e3:.0f})"  # noqa: E731
        raw.append(f"{t} thread{'s' if t != '1' else ''}: float forward {spread(s['float_forward'])}, quantized "
                   f"eager {spread(s['quant_forward'])}, compiled {spread(s['compiled_quant_forward'])}; searches "
                   f"{s['search_eager_full']:.1f} s eager full, {s['search_eager_cached']:.1f} s eager cached, "
                   f"{s['search_compiled_cached']:.1f} s compiled cached ({s['search_compiled_cached_warm_cache']:.1f} s "
                   f"from a warm cache).")
    return (f"## Search speed\n\n`python -m benchmarks.search_speed --calib {data['calib_images']} --passes "
            f"{data['passes']} --repeats {data['repeats']}` — 12-block DeiT-shaped model (dim 64, 50 tokens, random "
            f"weights), W4A8, {data['calib_images']} calibration images, P = {data['passes']}, K = 3; torch pinned "
            f"to each thread count in turn; forward ratios are medians of {data['repeats']} timings (raw: median "
            f"and min–max). Compiled and eager give the same bits (tests/search/test_compiled.py). "
            + (f"glibc's allocator pinned ({', '.join(f'`{k}={v}`' for k, v in data['malloc'].items())}): its default "
               "mmap threshold follows what the process freed before, which moved the eager forward by up to 60 % "
               "between runs whose calibrations differed only in their temporaries. " if data.get("malloc") else "")
            + f"{machine_line(data['machine'])}\n\n"
            + table(["measure", *(f"{t} thread{'s' if t != '1' else ''}" for t in threads), "target"], rows)
            + "\n\nRaw: " + " ".join(raw))


@torch.no_grad()
def child(args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement at one thread count, in this process (started with an empty inductor cache)."""
    torch.set_num_threads(args.threads[0])
    x = torch.randn(args.calib, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    batches = list(x.split(100))
    float_model = randomize_(create_float_model("deit_tiny_patch16_224", **KW)).eval()
    model = randomize_(create_quant_model("deit_tiny_patch16_224", QuantConfig(w_bits=4), **KW))
    calibrate(model, batches)
    return measure(model, float_model, batches, args.passes, args.repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calib", type=int, default=200)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeats < 5:
        parser.error(f"--repeats {args.repeats}: at least 5 (medians with a spread)")
    if args.child:
        print(json.dumps(child(args)))
        return
    by_threads = {}
    for threads in args.threads:
        with tempfile.TemporaryDirectory() as cache:  # a cold inductor cache for each thread count
            out = subprocess.run([sys.executable, "-m", "benchmarks.search_speed", "--child", "--threads", str(threads),
                                  "--calib", str(args.calib), "--passes", str(args.passes), "--repeats",
                                  str(args.repeats)], env={**MALLOC_ENV, **os.environ, "TORCHINDUCTOR_CACHE_DIR": cache},
                                 capture_output=True, text=True)
        if out.returncode != 0:  # keep the thread counts already measured
            print(f"{threads} threads failed (exit {out.returncode}):\n{out.stderr[-3000:]}", file=sys.stderr)
            break
        by_threads[str(threads)] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{threads} threads: " + ", ".join(f"{k} {_fmt(k, v)}" for k, v in by_threads[str(threads)].items()
                                                 if k in TARGETS or "compile" in k), flush=True)
    if not by_threads:
        raise SystemExit("search_speed: nothing measured")
    keys = (*TARGETS, "compile_seconds", "compiled_search_speedup_warm_cache", "compile_seconds_warm_cache")
    data: dict[str, Any] = {k: {t: r[k] for t, r in by_threads.items()} for k in keys}
    data.update(by_threads=by_threads, calib_images=args.calib, passes=args.passes, repeats=args.repeats,
                model="deit_tiny_patch16_224", model_kwargs=KW, malloc={k: os.environ.get(k, v) for k, v in MALLOC_ENV.items()},
                machine={**machine(), "torch_threads": ", ".join(map(str, args.threads))})
    write_json("search_speed", data)
    update_section("search_speed")
    print(section(data))


if __name__ == "__main__":
    main()
