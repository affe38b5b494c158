"""ONNX export with QuantizeLinear/DequantizeLinear at every quantization point ONNX can express.

What is exact and what is approximated:
  * weights: per-output-channel QDQ (uint8 containers; ONNX's 4-bit types need opset 21, which the
    TorchScript exporter does not reach, so 3/4-bit codes travel in 8-bit QDQ with the 3/4-bit range);
    bias correction is the per-channel affine map after DequantizeLinear (Mul/Add, constant-folded);
  * activations: per-tensor QDQ; PTF residual-stream quantizers are per-channel QDQ on the last axis;
  * integer LayerNorm: exported as its own arithmetic (Round/Floor/Log/Pow/Sqrt/ReduceSum…), exact up to
    float rounding; the log-int softmax likewise;
  * QDQ rounds x·(1/s) where our fake-quant computes x/s, so values within an ulp of a rounding tie may
    land one step away (about 1 in 10^5 elements).

Running it: ``onnx_session(path)`` uses onnxruntime's *basic* graph optimizations. Its default (extended)
level fuses QDQ pairs into integer kernels that requantize with their own rounding: on the searched reference
models (all 10,000 test images) 0.31–0.48 % of the argmaxes moved against PyTorch with fused kernels, 0.10–0.44 %
at the basic level, and 0.7 % vs 0.15 % in the end-to-end test's smaller run (2,000 images); pass ``fused=True``
for the integer kernels (BENCHMARKS.md, export section, measures both).
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from evolq_pl.export.safetensors_io import ExportError, check_output
from evolq_pl.layers import QConv2d, QLinear
from evolq_pl.quant.functional import bias_correct
from evolq_pl.quant.quantizer import UniformQuantizer


@contextmanager
def qdq_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Quantizers use exportable fake-quant ops; weights are re-derived in-graph (no cached constants)."""
    quants = [m for m in model.modules() if isinstance(m, UniformQuantizer)]
    layers = [m for m in model.modules() if isinstance(m, (QLinear, QConv2d))]
    for q in quants:
        q.onnx_qdq = True
    saved = [(layer, layer._frozen) for layer in layers]
    for layer in layers:
        wq = layer.weight_quantizer
        w_hat = wq.quantize(layer.weight.detach())
        layer._frozen = bias_correct(layer.weight.detach(), w_hat) if layer.bias_correction else w_hat
    try:
        yield model
    finally:
        for q in quants:
            q.onnx_qdq = False
        for layer, frozen in saved:
            layer._frozen = frozen


def onnx_session(path: str | Path, fused: bool = False, threads: int | None = None):  # -> ort.InferenceSession
    """An onnxruntime CPU session for an exported model: basic optimizations (faithful to PyTorch's arithmetic)
    or, with ``fused``, every optimization (QDQ fused into integer kernels: faster, rounds differently)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    level = ort.GraphOptimizationLevel
    options.graph_optimization_level = level.ORT_ENABLE_ALL if fused else level.ORT_ENABLE_BASIC
    if threads is not None:
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | Path, overwrite: bool = False,
                opset: int = 17) -> Path:
    """Export a calibrated quantized model (batch dimension dynamic)."""
    path = Path(path)
    check_output(path, overwrite)
    if any(isinstance(m, UniformQuantizer) and not m.calibrated for m in model.modules()):
        raise ExportError("model is not calibrated: calibrate (or load a searched checkpoint) before export")
    path.parent.mkdir(parents=True, exist_ok=True)
    with qdq_mode(model), torch.no_grad():
        torch.onnx.export(model, (example,), str(path), input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset,
                          dynamo=False)
    return path
