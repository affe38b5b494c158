"""ONNX export with QuantizeLinear/DequantizeLinear at every quantization point ONNX can express.

What is exact and what is approximated:
  * weights: their dequantized, bias-corrected values, as float constants computed by the same arithmetic as
    PyTorch's forward (ONNX's 3/4-bit types need opset 21, which the TorchScript exporter does not reach, and
    its weight QDQ would round x·(1/s); the safetensors export is the compact integer form);
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
from evolq_pl.io import atomic_path
from evolq_pl.quant.quantizer import UniformQuantizer, channel_dim_of, is_calibrated, quantizers


class _QDQ(UniformQuantizer):
    """Export-time behaviour of an activation quantizer: PyTorch's fake-quant ops, which the exporter writes as
    ONNX QuantizeLinear → DequantizeLinear (x·(1/s) rounding)."""

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = self.bit_type.lower, self.bit_type.upper
        zp = self.zero_point.round().to(torch.int32)
        if self.scale.numel() == 1:
            return torch.fake_quantize_per_tensor_affine(x, self.scale.float(), zp, lo, hi)
        return torch.fake_quantize_per_channel_affine(x, self.scale, zp, channel_dim_of(x, self.is_weight), lo, hi)


_QDQ_CLASSES: dict[type, type] = {}


def _qdq_class(cls: type) -> type:
    """``cls`` with the export-time ``quantize`` (one subclass per quantizer class, made once)."""
    if cls not in _QDQ_CLASSES:
        _QDQ_CLASSES[cls] = type(f"QDQ{cls.__name__}", (_QDQ, cls), {})
    return _QDQ_CLASSES[cls]


@contextmanager
def qdq_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Activation quantizers take their export-time class for the duration (the core holds no export flag);
    weight quantizers keep theirs, so weights are the forward's own values."""
    swapped = [(q, type(q)) for q in quantizers(model).values() if not q.is_weight]
    for q, cls in swapped:
        q.__class__ = _qdq_class(cls)
    try:
        yield model
    finally:
        for q, cls in swapped:
            q.__class__ = cls


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
    if not is_calibrated(model):
        raise ExportError("model is not calibrated: calibrate (or load a searched checkpoint) before export")
    path.parent.mkdir(parents=True, exist_ok=True)
    with qdq_mode(model), torch.no_grad(), atomic_path(path) as tmp:  # never a partial or truncated file
        torch.onnx.export(model, (example,), str(tmp), input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset,
                          dynamo=False)
    return path
