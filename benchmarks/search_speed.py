"""Search speed on a 12-block DeiT-shaped model (random weights), measured side by side in one run:

(a) cached candidate evaluation / full-forward evaluation, averaged over units (target ≤ 0.6);
(b) quantized forward / float forward (target ≤ 2.0 on CPU);
(c) whole search with prefix caching vs the same search with full-forward evaluation (same seed; the final
    scales must be identical) — target ≥ 1.6× faster.

    python -m benchmarks.search_speed [--calib 200] [--passes 2]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from benchmarks.report import machine, machine_line, table, update_section, write_json
from evolq_pl import QuantConfig, calibrate, create_quant_model, search_units
from evolq_pl.models.factory import create_float_model
from tests.helpers import randomize_
from evolq_pl.search import FitnessEvaluator, SearchConfig, SearchDriver

KW = dict(img_size=28, patch_size=4, in_chans=1, num_classes=10, embed_dim=64, depth=12, num_heads=4)


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_search(model, batches, cfg: SearchConfig, use_cache: bool) -> tuple[float, list[torch.Tensor]]:
    units, start = search_units(model), time.perf_counter()
    SearchDriver(units, cfg, FitnessEvaluator(model, batches, cfg, use_cache=use_cache)).run()
    return time.perf_counter() - start, [u.get() for u in units]


def section(data: dict) -> str:
    rows = [["(a) cached / full-forward candidate evaluation (mean over 12 units)", f"{data['cached_over_full']:.3f}", "≤ 0.6"],
            ["(b) quantized / float forward", f"{data['quant_over_float']:.2f}", "≤ 2.0 (CPU)"],
            ["(c) search speed-up, cached vs full forward", f"{data['search_speedup']:.2f}×", "≥ 1.6×"],
            ["same final scales in (c)", str(data["same_final_scales"]), "True"]]
    return (f"## Search speed\n\n`python -m benchmarks.search_speed --calib {data['calib_images']} --passes "
            f"{data['passes']}` — 12-block DeiT-shaped model (dim 64, 50 tokens, random weights), W4A8, "
            f"{data['calib_images']} calibration images, P = {data['passes']}, K = 3. {machine_line(data['machine'])}"
            "\n\n" + table(["measure", "measured", "target"], rows) +
            f"\n\nRaw: full-forward evaluation {data['full_eval_seconds'] * 1e3:.1f} ms, float forward "
            f"{data['float_forward_seconds'] * 1e3:.1f} ms, quantized forward {data['quant_forward_seconds'] * 1e3:.1f} ms, "
            f"search {data['search_cached_seconds']:.1f} s cached vs {data['search_full_seconds']:.1f} s full.")


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calib", type=int, default=200)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    x = torch.randn(args.calib, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    batches = list(x.split(100))
    float_model = randomize_(create_float_model("deit_tiny_patch16_224", **KW))
    model = randomize_(create_quant_model("deit_tiny_patch16_224", QuantConfig(w_bits=4), **KW))
    calibrate(model, batches)

    ev = FitnessEvaluator(model, batches)
    full_eval = timed(lambda: ev(), args.repeats)
    ratios = []
    for unit in search_units(model):
        ratios.append(timed(lambda: ev(unit), args.repeats) / full_eval)
    float_fwd = timed(lambda: [float_model(b) for b in batches], args.repeats)
    quant_fwd = timed(lambda: [model(b) for b in batches], args.repeats)

    cfg = SearchConfig(passes=args.passes, seed=0)
    start_state = copy.deepcopy(model.state_dict())
    t_cached, s_cached = run_search(model, batches, cfg, use_cache=True)
    model.load_state_dict(start_state)
    t_full, s_full = run_search(model, batches, cfg, use_cache=False)
    same = all(torch.equal(a, b) for a, b in zip(s_cached, s_full))

    m = machine()
    data = {"cached_over_full": statistics.mean(ratios), "cached_over_full_per_unit": ratios,
            "quant_over_float": quant_fwd / float_fwd, "search_speedup": t_full / t_cached,
            "same_final_scales": same, "full_eval_seconds": full_eval, "float_forward_seconds": float_fwd,
            "quant_forward_seconds": quant_fwd, "search_cached_seconds": t_cached, "search_full_seconds": t_full,
            "calib_images": args.calib, "passes": args.passes, "model": "deit_tiny_patch16_224", "model_kwargs": KW,
            "machine": m}
    write_json("search_speed", data)
    md = section(data)
    update_section("search_speed")
    print(md)


if __name__ == "__main__":
    main()
