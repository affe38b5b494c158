"""Export benchmark: *searched* checkpoints of the shipped reference models, made by ``evolq-pl fit``
and exported by ``evolq-pl export --ckpt_path`` exactly as a user does. Per model and bit width: file sizes
against the float state dict, PyTorch vs safetensors-reload vs onnxruntime (basic and fused optimizations)
on all 10,000 test images (top-1, argmax agreement with PyTorch, max logit difference), and single-image CPU
latency with the thread counts pinned (1 torch thread, 1 onnxruntime intra-op thread).

Also the ONNX file size of ImageNet-sized models (``IMAGENET``: random weights, 8 synthetic calibration images,
``evolq-pl export`` with the shipped ImageNet configs), where the weights, not the graph, make the file.

    python -m benchmarks.export [--passes 2] [--bits 3 4] [--sizes-only]
"""
from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from benchmarks.common import RESULTS, ROOT, machine, machine_line, table, update_section, write_json
from benchmarks.synthetic import float_checkpoint, make_imagefolder
from evolq_pl.cli.restore import build
from evolq_pl.export import load_safetensors
from evolq_pl.export.onnx_io import onnx_session
from evolq_pl.models.factory import create_float_model
from evolq_pl.models.reference import reference_model

CONFIGS = {"deit_fmnist": "configs/fmnist/deit.yaml", "levit_fmnist": "configs/fmnist/levit.yaml"}
IMAGENET = {"deit_small_patch16_224": "configs/imagenet/deit_small_w4a8.yaml",
            "vit_base_patch16_224": "configs/imagenet/vit_base_w4a8.yaml"}


def latency_ms(fn: Callable[[torch.Tensor], Any], x: torch.Tensor, n: int = 200) -> float:
    for i in range(10):
        fn(x[i:i + 1])
    times = []
    for i in range(n):
        start = time.perf_counter()
        fn(x[i:i + 1])
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "evolq_pl", *args], cwd=ROOT, check=True)


def searched_checkpoint(name: str, bits: int, passes: int, work: Path) -> tuple[list[str], Path]:
    """``evolq-pl fit`` at this bit width (no end-of-run evaluation; this script evaluates)."""
    overrides = ["--model.init_args.quant.w_bits", str(bits), "--model.init_args.search.passes", str(passes),
                 "--model.init_args.evaluate_at_end", "false"]
    run_dir = work / f"{name}_w{bits}"
    cli("fit", "--config", CONFIGS[name], "--run_dir", str(run_dir), *overrides)
    return overrides, run_dir / "checkpoints" / "last.ckpt"


def compare(reference: torch.Tensor, other: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    return {"top1": 100.0 * (other.argmax(1) == labels).float().mean().item(),
            "argmax_agreement": 100.0 * (other.argmax(1) == reference.argmax(1)).float().mean().item(),
            "max_abs_logit_diff": (other - reference).abs().max().item()}


@torch.no_grad()
def measure(name: str, bits: int, passes: int, work: Path) -> dict[str, Any]:
    overrides, ckpt = searched_checkpoint(name, bits, passes, work)
    st, onnx_file = work / f"{name}_w{bits}.safetensors", work / f"{name}_w{bits}.onnx"
    cli("export", "--config", CONFIGS[name], "--ckpt_path", str(ckpt), "--format", "safetensors",
        "--output", str(st), "--overwrite", "--", *overrides)
    cli("export", "--config", CONFIGS[name], "--ckpt_path", str(ckpt), "--format", "onnx",
        "--output", str(onnx_file), "--overwrite", "--", *overrides)
    module, dm = build([CONFIGS[name]], overrides, str(ckpt))
    model = module.model
    x = torch.cat([b for b, _ in dm.eval_dataloader()])
    y = torch.cat([b for _, b in dm.eval_dataloader()])
    torch.set_num_threads(1)
    logits = torch.cat([model(b) for b in x.split(500)])
    ref = reference_model(name)
    fp = create_float_model(ref["model_name"], checkpoint_path=ref["path"], **ref["model_kwargs"]).eval()
    buf = io.BytesIO()
    torch.save(fp.state_dict(), buf)
    reloaded = load_safetensors(st)
    rec: dict[str, Any] = {
        "model": name, "w_bits": bits, "passes": passes, "checkpoint": "evolq-pl fit (searched)",
        "float_bytes": len(buf.getvalue()), "safetensors_bytes": st.stat().st_size, "onnx_bytes": onnx_file.stat().st_size,
        "top1_pytorch": 100.0 * (logits.argmax(1) == y).float().mean().item(),
        "safetensors": compare(logits, torch.cat([reloaded(b) for b in x.split(500)]), y),
        "latency_ms_pytorch_float": latency_ms(fp, x), "latency_ms_pytorch_quant": latency_ms(model, x),
    }
    for label, fused in (("onnx_basic", False), ("onnx_fused", True)):
        sess = onnx_session(onnx_file, fused=fused, threads=1)
        run = lambda b: torch.from_numpy(sess.run(None, {"images": b.numpy()})[0])  # noqa: E731
        rec[label] = compare(logits, torch.cat([run(b) for b in x.split(500)]), y)
        rec[label]["latency_ms"] = latency_ms(run, x)
    return rec


def imagenet_size(name: str, config: str, work: Path) -> dict[str, Any]:
    """ONNX bytes against the float state dict's for an ImageNet-sized model at W4A8 (sizes only)."""
    ckpt, out = work / f"{name}.pt", work / f"{name}.onnx"
    float_checkpoint(ckpt, name)
    cli("export", "--config", "configs/imagenet/base.yaml", "--config", config, "--format", "onnx",
        "--output", str(out), "--overwrite", "--model.init_args.pretrained", "false",
        "--model.init_args.checkpoint_path", str(ckpt), "--data.init_args.root", str(work / "data"),
        "--data.init_args.calib_size", "8", "--data.init_args.num_workers", "0")
    return {"model": name, "w_bits": 4, "float_bytes": ckpt.stat().st_size, "onnx_bytes": out.stat().st_size}


def imagenet_sizes(work: Path) -> list[dict[str, Any]]:
    make_imagefolder(work / "data", 20, 10)  # every class in both splits
    return [imagenet_size(name, config, work) for name, config in IMAGENET.items()]


def report(records: list[dict[str, Any]], m: dict[str, Any], sizes: list[dict[str, Any]] | None = None,
           sizes_machine: dict[str, Any] | None = None) -> str:
    rows = [[r["model"], f"W{r['w_bits']}A8", f"{r['float_bytes'] / 1024:.0f}", f"{r['safetensors_bytes'] / 1024:.0f}",
             f"{r['onnx_bytes'] / 1024:.0f} ({r['onnx_bytes'] / r['float_bytes']:.2f}×)", f"{r['top1_pytorch']:.2f}",
             f"{r['safetensors']['argmax_agreement']:.2f} / {r['safetensors']['max_abs_logit_diff']:.1e}",
             f"{r['onnx_basic']['top1']:.2f} / {r['onnx_basic']['argmax_agreement']:.2f} / {r['onnx_basic']['max_abs_logit_diff']:.3f}",
             f"{r['onnx_fused']['top1']:.2f} / {r['onnx_fused']['argmax_agreement']:.2f} / {r['onnx_fused']['max_abs_logit_diff']:.3f}",
             f"{r['latency_ms_pytorch_float']:.2f}", f"{r['latency_ms_pytorch_quant']:.2f}",
             f"{r['onnx_basic']['latency_ms']:.2f}", f"{r['onnx_fused']['latency_ms']:.2f}"] for r in records]
    shas = ", ".join(f"{n} `{reference_model(n)['sha256'][:8]}`" for n in CONFIGS)
    passes = sorted({r["passes"] for r in records})
    return ("## Export of searched checkpoints\n\n"
            f"`python -m benchmarks.export` — `evolq-pl fit` ({', '.join(map(str, passes))} passes, 1,000 calibration "
            f"images) on the shipped reference models ({shas}), then `evolq-pl export --ckpt_path` to safetensors "
            "and ONNX; all 10,000 test images; agreement = argmax equal to the searched PyTorch model's; latency = "
            "median of 200 single-image calls with 1 torch thread and 1 onnxruntime intra-op thread. "
            f"{machine_line(m)}\n\n"
            + table(["model", "bits", "float KiB", "safetensors KiB", "ONNX KiB (× float)", "PyTorch top-1",
                     "safetensors reload: agreement % / max Δlogit", "ORT basic: top-1 / agreement % / max Δlogit",
                     "ORT fused: top-1 / agreement % / max Δlogit", "PyTorch float ms", "PyTorch fake-quant ms",
                     "ORT basic ms", "ORT fused ms"], rows)
            + "\n\nThe ONNX file stores each weight as one int8/uint8 code per value (3/4-bit types need opset 21, "
              "which the TorchScript exporter does not reach), with DequantizeLinear and the bias correction's "
              "arithmetic recomputing the forward's weights bit for bit (a test checks every weight in "
              "onnxruntime); the safetensors file, two codes per byte, is the compact one. "
              "'Fused' is onnxruntime's default optimization level, "
              "which turns QDQ pairs into integer kernels with their own requantization rounding; "
              "`onnx_session()` uses the basic level unless asked."
            + ("\n\nAt ImageNet size the weights make the file (random weights, W4A8, `evolq-pl export --format onnx` "
               "with the shipped configs, 8 synthetic calibration images): "
               + ", ".join(f"{r['model']} {r['onnx_bytes'] / 2**20:.1f} MiB against {r['float_bytes'] / 2**20:.1f} "
                           f"MiB float ({r['onnx_bytes'] / r['float_bytes']:.2f}×)" for r in sizes or [])
               + ". The Fashion-MNIST models' files are mostly graph: their integer LayerNorm and quantizer "
                 "arithmetic is the same few thousand nodes whatever the width. "
               + (machine_line(sizes_machine) if sizes_machine else "") if sizes else ""))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--passes", type=int, default=2)
    p.add_argument("--bits", type=int, nargs="+", default=[3, 4])
    p.add_argument("--sizes-only", action="store_true", help="measure the ImageNet-size ONNX files only (the "
                   "stored records are kept)")
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="evolq_export_"))
    data = json.loads((RESULTS / "export.json").read_text()) if a.sizes_only else {}
    if not a.sizes_only:
        data["records"] = []
        for name in CONFIGS:
            for bits in a.bits:
                data["records"].append(measure(name, bits, a.passes, work))
                print(data["records"][-1], flush=True)
        data["machine"] = machine()
    data["imagenet_sizes"] = imagenet_sizes(work)
    data["imagenet_sizes_machine"] = machine()
    write_json("export", data)
    update_section("export")


if __name__ == "__main__":
    main()
