"""Bit-for-bit parity with the published Evol-Q code on the same float weights and calibration batches.

Needs a checkout of the published code (github.com/enyac-group/evol-q; measured at 9a39a35), used as it is:
its DeiT-Tiny and Swin-T in the ``e2e`` settings (config_fq, PTF, OMSE activations, bias correction, uint4
weights, uint8 activations, no LIS), calibrated as its main.py does. Ours: ``create_quant_model(name)`` with the
default QuantConfig at W4. Realistic random weights (seed 0), 2 calibration batches and one batch for the logits
at 224. Every quantizer's scale and zero point is compared, then the logits.

    python -m benchmarks.reference_parity --reference /path/to/evol-q [--out PATH] [--no-report]
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import benchmark_parser, machine, machine_line, record, table
from evolq_pl import QuantConfig, calibrate, create_quant_model
from evolq_pl.models.factory import create_float_model
from evolq_pl.quant import UniformQuantizer
from evolq_pl.models.random_weights import randomize_


MODELS = {"deit_tiny_patch16_224": 8, "swin_tiny_patch4_window7_224": 4}  # model → images per batch


def published_key(name: str) -> str:
    """A timm name → the published model's: timm moved Swin's patch merging to the start of the next stage and
    its head into ``head.fc``."""
    name = re.sub(r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m[1]) - 1}.downsample", name)
    return "head." + name.removeprefix("head.fc.") if name.startswith("head.fc.") else name


def reference_model(checkout: Path, name: str, state: dict[str, torch.Tensor],
                    batches: list[torch.Tensor]) -> torch.nn.Module:
    """The published model, loaded with ``state`` and calibrated the way its main.py does."""
    sys.path.insert(0, str(checkout))
    import models  # the published code's modules, imported from the checkout
    from config_fq import Config

    args = argparse.Namespace(w_bit_type="uint4", a_bit_type="uint8", quant_method="omse", bias_corr=True,
                              lis=False, ptf=True)
    model = getattr(models, name)(pretrained=False, cfg=Config(args)).eval()
    model.load_state_dict({published_key(k): v for k, v in state.items()}, strict=False)
    model.model_open_calibrate()
    for i, x in enumerate(batches):
        if i == len(batches) - 1:
            model.model_open_last_calibrate()
        model(x)
    model.model_close_calibrate()
    model.model_quant()
    return model


def reference_name(ours: str) -> str:
    """Our quantizer's name → the published module holding the same quantizer."""
    ours = published_key(ours)
    if ours.endswith(".weight_quantizer"):
        return ours.removesuffix(".weight_quantizer") + ".quantizer"
    return ours.replace(".attn.softmax.quantizer", ".attn.log_int_softmax.quantizer") if ours.endswith(
        ".attn.softmax.quantizer") else ours + ".quantizer"


def differs(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise difference after broadcasting (a PTF zero point is one value there, one per channel here)."""
    a, b = torch.broadcast_tensors(a.reshape(-1), b.reshape(-1))
    return not torch.equal(a, b)


@torch.no_grad()
def measure(checkout: Path, name: str) -> dict[str, Any]:
    torch.set_num_threads(1)  # one reduction order on both sides
    state = randomize_(create_float_model(name), 0).state_dict()
    g, n = torch.Generator().manual_seed(0), MODELS[name]
    calib, test = [torch.randn(n, 3, 224, 224, generator=g) for _ in range(2)], torch.randn(n, 3, 224, 224, generator=g)
    ref = reference_model(checkout, name, state, calib)
    theirs = dict(ref.named_modules())
    ours = create_quant_model(name, QuantConfig(w_bits=4))
    ours.load_state_dict(state, strict=False)
    calibrate(ours, calib)
    found = {n: m for n, m in ours.named_modules() if isinstance(m, UniformQuantizer)}  # (older commits too)
    missing = [n for n in found if reference_name(n) not in theirs]
    pairs = {n: theirs[reference_name(n)] for n in found if n not in missing}
    logits_ours, logits_ref = ours(test), ref(test)
    return {"model": name, "batch": n, "quantizers": len(found), "unmatched": missing,
            "scales_differ": sum(differs(q.scale, pairs[n].scale) for n, q in found.items() if n in pairs),
            "zero_points_differ": sum(differs(q.zero_point, pairs[n].zero_point) for n, q in found.items() if n in pairs),
            "max_abs_logit_diff": (logits_ours - logits_ref).abs().max().item(),
            "logits_bitwise_equal": torch.equal(logits_ours, logits_ref),
            "argmax_agreement": (logits_ours.argmax(1) == logits_ref.argmax(1)).float().mean().item(),
            "max_abs_logit": logits_ref.abs().max().item(), "machine": machine()}


def section(records: dict[str, dict[str, Any]], before: dict[str, Any] | None) -> str:
    rows = [[r["machine"]["commit"], label, r.get("model", "deit_tiny_patch16_224"),
             f"{r['scales_differ']} / {r['zero_points_differ']} of {r['quantizers']}",
             f"{r['max_abs_logit_diff']:.3g}", "yes" if r["logits_bitwise_equal"] else "no"]
            for label, r in [("before", before)] * (before is not None) + [("this commit", r) for r in records.values()]]
    first = next(iter(records.values()))
    return "\n".join([
        "## Parity with the published code",
        "`python -m benchmarks.reference_parity --reference <evol-q checkout>`: the published model (e2e settings, W4A8) "
        "and ours on the same random weights (seed 0), 2 calibration batches at 224 (DeiT-Tiny 8 images each, Swin-T "
        "4), logits on a third batch; one torch thread. " + machine_line(first["machine"]),
        "", table(["commit", "code", "model", "scales / zero points that differ", "max abs logit difference",
                   "logits bitwise equal"], rows), "",
        "Before, the bias correction's operation order differed from the published one: the last bit of some "
        "weights, then later roundings (a one-off check, not part of this script: putting only the published order "
        "into the earlier code made its logits bitwise equal too). Both it and the integer LayerNorm's mean now "
        "follow the published order. Measured on CPU with one thread; not measured on a GPU.",
    ])


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--reference", type=Path, required=True, help="a checkout of enyac-group/evol-q")
    args = parser.parse_args()
    if not (args.reference / "config_fq.py").is_file():
        parser.error(f"--reference={str(args.reference)!r}: not a checkout of enyac-group/evol-q (no config_fq.py)")
    data = {name: measure(args.reference, name) for name in MODELS}
    record("reference_parity", data, args)
    print(json.dumps({m: {k: v for k, v in r.items() if k != "machine"} for m, r in data.items()}, indent=1))


if __name__ == "__main__":
    main()
