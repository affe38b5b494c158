"""The GPU user path (issue 24): DeiT-S W4A8, the paper-default search, run the way a user runs it.

On the machine: a synthetic ImageFolder (1,000 train + 500 val 256-px JPEGs, 10 classes) and a DeiT-S float
checkpoint with realistic random weights are made; then ``evolq-pl fit`` with the shipped configs runs twice,
with default settings (``compile_backend: auto``) and forced eager; each run's process wall time, results.json
(phase times, auto's decision) and final scales are read back. In the same run: the float floor of this search
(the same evaluations, cached suffixes included, on the float model) and a per-stage / per-module comparison
of the compiled forward against eager (default inductor settings and ``evolq_pl.quant.exact.inductor_options``).

    python -m benchmarks.gpu_user_path --out $OUT/gpu_user_path.json          # on the GPU machine
    python -m benchmarks.gpu_user_path --quick --out /tmp/gpu_user_path.json  # CPU dry run (2 blocks, small)
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
import traceback
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import torch

from evolq_pl import QuantConfig, calibrate, create_quant_model, search_units
from evolq_pl.quant import quant_disabled
from evolq_pl.quant.exact import exact_compiled, inductor_options
from evolq_pl.search import FitnessEvaluator, SearchConfig
from benchmarks.synthetic import fit_cli, float_checkpoint, make_imagefolder
from evolq_pl.models.random_weights import randomize_

MODEL = "deit_small_patch16_224"
SKIP = {"drop1", "drop2", "attn_drop", "proj_drop", "drop_path1", "drop_path2", "ls1", "ls2", "norm", "q_norm",
        "k_norm", "quantizer"}  # identities and quantizers compared inside their layers
CONFIGS = ("configs/imagenet/base.yaml", "configs/imagenet/deit_small_w4a8.yaml")


def fit(work: Path, name: str, extra: list[str], quick: bool) -> dict[str, Any]:
    """One ``evolq-pl fit`` of the shipped DeiT-S config on the synthetic folder, in a fresh process."""
    args = [*(a for c in CONFIGS for a in ("--config", c)), "--data.init_args.root", str(work / "data"),
            "--data.init_args.num_workers", str(min(8, os.cpu_count() or 1)),
            "--model.init_args.pretrained", "false", "--model.init_args.checkpoint_path", str(work / "float.pt"),
            *extra]
    if quick:
        args += ["--model.init_args.model_kwargs", "{depth: 2}", "--data.init_args.calib_size", "100",
                 "--model.init_args.search.passes", "1"]
    return fit_cli(args, work / name)


def timed(fn: Callable[[], Any], device: torch.device, repeats: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize() if device.type == "cuda" else None
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize() if device.type == "cuda" else None
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def float_floor(model: torch.nn.Module, batches: list[torch.Tensor], cfg: SearchConfig) -> dict[str, Any]:
    """The search's evaluations (one full, then K per unit per pass from the unit's cached input) timed on the
    float model: what the search would cost if quantization were free."""
    device = batches[0].device
    with quant_disabled(model):
        ev = FitnessEvaluator(model, batches, SearchConfig(compile_backend=None))
        full = timed(ev, device)
        per_unit = [timed(lambda u=u: ev(u), device) for u in search_units(model)]
    return {"full_evaluation_s": full, "unit_evaluation_s": per_unit,
            "floor_s": full + cfg.passes * cfg.cycles * sum(per_unit)}


def compare(a: torch.Tensor, b: torch.Tensor) -> dict[str, Any]:
    diff = (a.double() - b.double()).abs()
    return {"equal": bool(torch.equal(a, b)), "differing": int((diff > 0).sum()), "max_abs": float(diff.max())}


def compiled_vs_eager(model: torch.nn.Module, batches: list[torch.Tensor]) -> dict[str, Any]:
    """Each stage and each module of the first block compiled (default settings, then the exact ones) and run
    on the eager input it receives; outputs compared bit for bit with eager."""
    x = batches[0]
    stages = model.stage_fns()
    inputs, h = [], x
    with torch.no_grad():
        for stage in stages:
            inputs.append(h)
            h = stage(h)
    block = model.blocks[0]
    seen: dict[str, tuple] = {}
    def record(name: str) -> Callable:
        def hook(module: torch.nn.Module, args: tuple, out: Any) -> None:  # returns None: the output stays
            seen.setdefault(name, (args, out))
        return hook

    hooks = [m.register_forward_hook(record(n)) for n, m in block.named_modules() if n]
    with torch.no_grad():
        block(inputs[1])
    for hk in hooks:
        hk.remove()
    out: dict[str, Any] = {}
    # "exact": as the search's evaluator compiles (its inductor options, inside exact_compiled)
    for label, options, context in (("default", {}, nullcontext), ("exact", inductor_options(), exact_compiled)):
        torch._dynamo.reset()
        rows: dict[str, Any] = {}
        with torch.no_grad(), context(model):
            for i in sorted({0, 1, len(stages) - 1}):  # the embedding, a block (all alike), the tail
                stage = stages[i]
                rows[f"stage{i}"] = compare(torch.compile(stage, options=options, dynamic=False)(inputs[i]),
                                            stages[i](inputs[i]))
            for name, (args, ref) in seen.items():
                if not isinstance(ref, torch.Tensor) or name.split(".")[-1] in SKIP:
                    continue
                mod = dict(block.named_modules())[name]
                try:
                    rows[f"blocks.0.{name} ({type(mod).__name__})"] = compare(
                        torch.compile(mod, options=options, dynamic=False)(*args), ref)
                except Exception as err:  # record, go on
                    rows[f"blocks.0.{name}"] = {"error": f"{type(err).__name__}: {str(err)[:200]}"}
        out[label] = {"options": options, "rows": rows,
                      "stages_equal": all(r.get("equal") for k, r in rows.items() if k.startswith("stage"))}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("gpu_user_path.json"))
    p.add_argument("--work", type=Path, default=Path("/tmp/evolq_user_path"))
    p.add_argument("--budget-s", type=float, default=450.0, help="sections that would start later are skipped")
    p.add_argument("--quick", action="store_true", help="CPU dry run: 2-block DeiT-S, 200 calibration images, 1 pass")
    a = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    shutil.rmtree(a.work, ignore_errors=True)
    a.work.mkdir(parents=True)
    kwargs = {"depth": 2} if a.quick else {}
    result: dict[str, Any] = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                              "torch": torch.__version__, "quick": a.quick, "configs": list(CONFIGS)}

    def write() -> None:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(result, indent=1, default=str) + "\n")

    deadline = time.perf_counter() + a.budget_s

    def section(name: str, fn: Callable[[], Any]) -> None:
        start = time.perf_counter()
        if deadline - start < 20:
            result[name] = {"skipped": "time limit"}
            write()
            return
        try:
            result[name] = fn()
        except Exception as err:  # record and go on: the other sections still count
            result[name] = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc(limit=6)}
        print(f"[user_path] {name}: {time.perf_counter() - start:.1f} s", flush=True)
        write()

    section("setup", lambda: (make_imagefolder(a.work / "data", 1000, 500 if not a.quick else 100),
                              float_checkpoint(a.work / "float.pt", MODEL, kwargs), None)[-1])
    runs: dict[str, Any] = {}
    (a.work / "eager.yaml").write_text("model: {init_args: {search: {compile_backend: null}}}\n")
    (a.work / "inductor.yaml").write_text("model: {init_args: {search: {compile_backend: inductor}}}\n")
    for name in ("default", "other"):
        if name == "other":  # the path auto did not take, forced, for the bit-for-bit comparison
            name = "eager" if runs.get("default", {}).get("results", {}).get("compile_backend") == "inductor" \
                else "inductor"
        extra = [] if name == "default" else ["--config", str(a.work / f"{name}.yaml")]
        section(f"fit_{name}", lambda name=name, extra=extra: runs.setdefault(name, fit(a.work, name, extra, a.quick)))
        result[f"fit_{name}"] = {k: v for k, v in runs.get(name, {}).items() if k != "scales"}
        write()
    cfg = SearchConfig(passes=1 if a.quick else SearchConfig().passes)
    g = torch.Generator().manual_seed(0)
    n = 200 if a.quick else 1000
    batches = [torch.randn(100, 3, 224, 224, generator=g).to(device) for _ in range(n // 100)]
    model = randomize_(create_quant_model(MODEL, QuantConfig(w_bits=4), **kwargs), 0).to(device)
    torch.set_float32_matmul_precision("highest")
    section("float_floor", lambda: float_floor(model, batches, cfg))
    section("calibrate", lambda: calibrate(model, batches[:2]) and None)
    section("compiled_vs_eager", lambda: compiled_vs_eager(model, batches))
    default = runs.get("default", {})
    summary: dict[str, Any] = {}
    if "results" in default:
        r = default["results"]
        summary["wall_seconds"] = default["wall_seconds"]
        summary["search_seconds"] = r["search_seconds"]
        summary["phase_seconds"] = r.get("phase_seconds")
        summary["compile_decision"] = r.get("compile_decision")
        if isinstance(result.get("float_floor"), dict) and "floor_s" in result["float_floor"]:
            # the search phase: auto's timing and compile included (the driver's search_seconds leave them out)
            summary["search_over_float_floor"] = r["phase_seconds"]["search"] / result["float_floor"]["floor_s"]
    compiled, eager = (runs.get("inductor", default), runs.get("eager", default))
    if "scales" in compiled and "scales" in eager and compiled is not eager:
        a_s, b_s = compiled["scales"], eager["scales"]
        summary["compiled_scales_equal"] = a_s.keys() == b_s.keys() and all(torch.equal(a_s[k], b_s[k]) for k in a_s)
        summary["scales_differing"] = sum(not torch.equal(a_s[k], b_s[k]) for k in a_s)
        summary["scales"] = len(a_s)
        summary["fitness_final"] = {k: r["results"]["fitness_final"] for k, r in runs.items() if "results" in r}
        summary["default_compiled"] = default["results"].get("compile_backend") == "inductor"
    result["user_path"] = summary
    write()
    print(json.dumps(summary, indent=1, default=str))


if __name__ == "__main__":
    main()
