"""Where the quantization error sits (issue 4: why the search gains little at W4A8).

    python -m benchmarks.error_budget [--seeds 0 1 2] [--bits 3 4 8]

For each shipped reference model, bit width and calibration seed: the calibrated init's test top-1, then
the same model with one group of quantizers switched back to float (all others stay quantized):
``searched`` (attention weights: the only scales the paper's search moves), ``mlp`` and ``embed`` (the
MLP and patch-embed / conv-stem weights the ``include_mlp`` / ``include_embed`` options add),
``other_weights`` (the head) and ``activations`` (activations, softmax, integer LayerNorm). The top-1 a group
recovers when it is float bounds what tuning its scales could recover by itself; it is set beside the
Evol-Q gain measured by ``benchmarks/accuracy.py`` (current checkpoint records only).
"""
from __future__ import annotations

import argparse
import statistics
from typing import Any

import torch

from benchmarks.accuracy import is_current, load
from benchmarks.common import machine, machine_line, table, update_section, write_json
from evolq_pl import QuantConfig, calibrate, create_quant_model, quant_disabled
from evolq_pl.lightning.fashion_mnist import FashionMNISTDataModule
from evolq_pl.report.metrics import evaluate
from evolq_pl.models.reference import reference_model
from evolq_pl.models.units import quantizer_groups

MODELS = ("deit_fmnist", "levit_fmnist")
GROUPS = ("searched", "mlp", "embed", "other_weights", "activations")


@torch.no_grad()
def measure(name: str, bits: int, seed: int) -> dict[str, Any]:
    ref = reference_model(name)
    dm = FashionMNISTDataModule(image_size=ref["image_size"], batch_size=500, calib_size=1000, seed=seed)
    model = create_quant_model(ref["model_name"], QuantConfig(w_bits=bits), checkpoint_path=ref["path"],
                               checkpoint_sha256=ref["sha256"], **ref["model_kwargs"]).eval()
    calibrate(model, dm.calibration_data().batches())
    test = list(dm.eval_dataloader())

    def top1() -> float:
        return evaluate(model, test, 10)["top1"]

    rec: dict[str, Any] = {"model": name, "w_bits": bits, "seed": seed, "checkpoint_sha256": ref["sha256"],
                           "top1_init": top1()}
    with quant_disabled(model):
        rec["top1_float"] = top1()
    for group, members in quantizer_groups(model).items():
        with quant_disabled(model, only=members):
            rec[f"top1_{group}_float"] = top1()
    return rec


def evolq_gain(name: str, bits: int) -> str:
    """Mean ± std Evol-Q − init from the accuracy benchmark's main suite (same checkpoint), or '-'."""
    rs = [r for r in load()["records"].values() if r["spec"]["suite"] == "main" and r["spec"]["ref"] == name
          and r["spec"]["w_bits"] == bits and r["spec"]["a_bits"] == 8 and is_current(r)]
    d = [r["top1_evolq"] - r["top1_init"] for r in rs]
    return f"{statistics.mean(d):+.2f} ± {statistics.stdev(d):.2f}" if len(d) > 1 else "-"


def report(records: list[dict[str, Any]], m: dict[str, Any]) -> str:
    rows = []
    for name in MODELS:
        for bits in sorted({r["w_bits"] for r in records}):
            rs = [r for r in records if r["model"] == name and r["w_bits"] == bits]
            if not rs:
                continue
            init = statistics.mean(r["top1_init"] for r in rs)
            gain = {g: statistics.mean(r[f"top1_{g}_float"] - r["top1_init"] for r in rs) for g in GROUPS}
            rows.append([name, f"W{bits}A8", len(rs), f"{rs[0]['top1_float']:.2f}", f"{init:.2f}",
                         f"{rs[0]['top1_float'] - init:.2f}", *(f"{gain[g]:+.2f}" for g in GROUPS),
                         evolq_gain(name, bits)])
    return ("## Error budget: which quantizers cost the accuracy\n\n`python -m benchmarks.error_budget` — "
            "calibrated init (1,000 calibration images per seed), all 10,000 test images; each `+… float` column is "
            "the top-1 recovered when only that group of quantizers is switched back to float (mean over "
            "calibration seeds). `searched` = the attention weight scales, the only ones the paper's search moves; "
            "its column is the head-room the search has if tuning scales could undo all of their error; `mlp` and "
            "`embed` are what the `include_mlp` / `include_embed` options add to the search, `other_weights` is the head. "
            f"{machine_line(m)}\n\n"
            + table(["model", "bits", "seeds", "float", "init", "gap", "+ searched float", "+ mlp float", "+ embed float",
                     "+ head float", "+ activations float", "Evol-Q − init (accuracy.py)"], rows) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--bits", nargs="+", type=int, default=[3, 4, 8])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = p.parse_args()
    records = []
    for name in args.models:
        for bits in args.bits:
            for seed in args.seeds:
                records.append(measure(name, bits, seed))
                print(records[-1], flush=True)
    m = machine()
    write_json("error_budget", {"records": records, "machine": m})
    md = report(records, m)
    update_section("error_budget")
    print(md)


if __name__ == "__main__":
    main()
