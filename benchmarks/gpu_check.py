"""GPU check (issue 6): random weights, synthetic 224×224 images, one GPU.

Per model: float forward img/s, quantized forward img/s, candidate evaluations/s (eager and compiled,
averaged over units), and the paper-default search (P = 10, K = 3, 1,000 images): measured end to end
(calibration included) for the models in --full, projected from the evaluation rate for the others.

    python -m benchmarks.gpu_check --out gpu_check.json                 # on the GPU machine
    python -m benchmarks.gpu_check --quick --out /tmp/gpu_check.json    # CPU smoke test of the script
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from evolq_pl import QuantConfig, calibrate, create_quant_model, search_units
from evolq_pl.models.random_init import randomize_
from evolq_pl.quant import quant_disabled
from evolq_pl.search import EvolutionarySearch, FitnessEvaluator, SearchConfig, schedule


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def rate(fn, device: torch.device, images: int, repeats: int = 3) -> float:
    fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return images * repeats / (time.perf_counter() - start)


@torch.no_grad()
def check_model(name: str, device: torch.device, n: int, full: bool, depth: int | None, backend: str | None) -> dict:
    kw = {"depth": depth} if depth else {}
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(100 if n >= 100 else n, 3, 224, 224, generator=g).to(device) for _ in range(max(n // 100, 1))]
    start = time.perf_counter()
    model = randomize_(create_quant_model(name, QuantConfig(w_bits=4), **kw)).to(device)
    calibrate(model, batches)
    calib_s = time.perf_counter() - start
    imgs = sum(len(b) for b in batches)
    out = {"model": name, "images": imgs}
    with quant_disabled(model):
        out["float_img_s"] = rate(lambda: [model(b) for b in batches], device, imgs)
    out["quant_img_s"] = rate(lambda: [model(b) for b in batches], device, imgs)
    units = search_units(model)
    for label, be in (("eager", None), ("compiled", backend)):
        if label == "compiled" and be is None:
            continue
        ev = FitnessEvaluator(model, batches, compile_backend=be)
        rates = []
        for unit in units:
            ev.prepare(unit)
            rates.append(rate(lambda: ev(unit), device, 1, repeats=2))
        out[f"evals_per_s_{label}"] = sum(rates) / len(rates)
    best = out.get("evals_per_s_compiled", out["evals_per_s_eager"])
    cfg = SearchConfig()
    out["projected_search_s"] = calib_s + len(units) * cfg.passes * cfg.cycles / best
    if full:
        ev = FitnessEvaluator(model, batches, compile_backend=backend)
        search, fitness = EvolutionarySearch(cfg), ev()
        start = time.perf_counter()
        for _, u in schedule(len(units), cfg.passes):
            ev.prepare(units[u])
            fitness = search.search_unit(units[u], ev, fitness)
        sync(device)
        out["search_s_measured"] = calib_s + time.perf_counter() - start
    if device.type == "cuda":
        out["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
        torch.cuda.reset_peak_memory_stats()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["deit_tiny_patch16_224", "deit_small_patch16_224",
                                                   "vit_base_patch16_224", "levit_128"])
    p.add_argument("--full", nargs="*", default=["deit_tiny_patch16_224", "deit_small_patch16_224"])
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--backend", default="inductor")
    p.add_argument("--quick", action="store_true", help="CPU smoke test: 2 blocks, 20 images, no compile")
    p.add_argument("--out", default="gpu_check.json")
    a = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    depth, n, backend = (2, 20, None) if a.quick else (None, a.images, a.backend)
    models = a.models[:1] if a.quick else a.models
    result = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__,
              "matmul_precision": torch.get_float32_matmul_precision(), "models": []}
    for name in models:
        r = check_model(name, device, n, name in a.full, depth, backend)
        result["models"].append(r)
        print(json.dumps(r), flush=True)
    deit_s = next((m.get("search_s_measured") for m in result["models"] if m["model"] == "deit_small_patch16_224"), None)
    result["deit_small_search_s"] = deit_s
    with open(a.out, "w") as f:
        json.dump(result, f, indent=2)
    print("| model | float img/s | quant img/s | quant/float time | evals/s eager | evals/s compiled | search s |")
    print("|---|---|---|---|---|---|---|")
    for m in result["models"]:
        print(f"| {m['model']} | {m['float_img_s']:.0f} | {m['quant_img_s']:.0f} | {m['float_img_s'] / m['quant_img_s']:.2f} | "
              f"{m['evals_per_s_eager']:.2f} | {m.get('evals_per_s_compiled', float('nan')):.2f} | "
              f"{m.get('search_s_measured', m['projected_search_s']):.0f}{'' if 'search_s_measured' in m else ' (projected)'} |")


if __name__ == "__main__":
    main()
