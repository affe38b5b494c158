"""ONNX export with QuantizeLinear/DequantizeLinear at every quantization point ONNX can express.

What is exact and what is approximated:
  * weights: int8/uint8 codes with per-channel scales, DequantizeLinear and the bias correction's arithmetic,
    which recompute the forward's weights bit for bit (``onnx_weights``; ONNX's 3/4-bit types need opset 21,
    which the TorchScript exporter does not reach: the safetensors export packs two codes per byte);
  * activations: per-tensor QDQ; PTF residual-stream quantizers are per-channel QDQ on the last axis;
  * integer LayerNorm: exported as its own arithmetic (Round/Floor/Log/Pow/Sqrt/ReduceSum…), exact up to
    float rounding; the log-int softmax likewise;
  * QDQ rounds x·(1/s) where our fake-quant computes x/s, so values within an ulp of a rounding tie may
    land one step away (about 1 in 10^5 elements).

Running it: ``onnx_session(path)`` uses onnxruntime's *basic* graph optimizations. Its default (extended)
level fuses QDQ pairs into integer kernels that requantize with their own rounding and move more argmaxes
against PyTorch; pass ``fused=True`` for them (BENCHMARKS.md's export section measures both on the searched
reference models).
"""
from __future__ import annotations

import functools
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar, Iterator

import torch
from torch import nn

from evolq_pl.export.onnx_weights import integer_weights
from evolq_pl.export.output import ExportError, check_output
from evolq_pl.io import atomic_path
from evolq_pl.quant.quantizer import UniformQuantizer, channel_dim_of, is_calibrated, quantizers


class _Traced(UniformQuantizer):
    """Export-time quantizer: what depends on its parameters' size is decided before tracing (the tracer records
    ``numel()`` as a tensor, and a Python branch on one is a TracerWarning): ``single`` (one scale) is the class's."""

    single: ClassVar[bool]

    def check_calibrated(self) -> None:
        """Nothing to check: ``export_onnx`` refused an uncalibrated model before tracing."""

    def broadcast(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.single:
            return t
        shape = [1] * x.dim()
        shape[channel_dim_of(x, self.is_weight)] = -1
        return t.view(shape)


class _QDQ(_Traced):
    """An activation quantizer at export: PyTorch's fake-quant ops, which the exporter writes as ONNX
    QuantizeLinear → DequantizeLinear (x·(1/s) rounding). One scale goes as a scalar, ONNX's per-tensor form (a
    one-element 1-D scale reads as per-axis: onnxruntime's bias quantization then warns, MergeShapeInfo)."""

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = self.bit_type.lower, self.bit_type.upper
        zp = self.zero_point.round().to(torch.int32)
        if self.single:
            return torch.fake_quantize_per_tensor_affine(x, self.scale.float().reshape(()), zp.reshape(()), lo, hi)
        return torch.fake_quantize_per_channel_affine(x, self.scale, zp, channel_dim_of(x, self.is_weight), lo, hi)


@functools.cache
def _export_class(cls: type, single: bool, qdq: bool) -> type:
    """``cls`` at export (one subclass per quantizer class and kind, made once)."""
    return type(f"{'QDQ' if qdq else 'Traced'}{cls.__name__}", (_QDQ if qdq else _Traced, cls), {"single": single})


def _exp2(g, x):  # noqa: ANN001, ANN202 (a TorchScript exporter symbolic)
    return g.op("Pow", g.op("Constant", value_t=torch.tensor(2.0)), x)


@contextmanager
def export_mode(model: nn.Module, opset: int) -> Iterator[nn.Module]:
    """For the duration (the core holds no export flag): weight layers hand the exporter their integer
    recomputation (``onnx_weights``), activation quantizers take their QDQ class (and weight quantizers their
    traced one, for a layer without its integer form); the exporter, which has no exp2 (the core's powers of
    two), writes it as Pow(2, x)."""
    torch.onnx.register_custom_op_symbolic("aten::exp2", _exp2, opset)
    swapped = [(q, type(q)) for q in quantizers(model).values()]
    try:
        with integer_weights(model):
            for q, cls in swapped:
                q.__class__ = _export_class(cls, q.scale.numel() == 1, not q.is_weight)
            yield model
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::exp2", opset)
        for q, cls in swapped:
            q.__class__ = cls


def onnx_session(path: str | Path, fused: bool = False, threads: int | None = None):  # -> ort.InferenceSession
    """An onnxruntime CPU session for an exported model: basic optimizations without onnxruntime's QDQ
    transformers (faithful to PyTorch's arithmetic; the integer weights become float constants once, at load)
    or, with ``fused``, every optimization (QDQ fused into integer kernels: rounds differently)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    level = ort.GraphOptimizationLevel
    options.graph_optimization_level = level.ORT_ENABLE_ALL if fused else level.ORT_ENABLE_BASIC
    if not fused:  # no QDQ rewriting at all, and the weights' DequantizeLinear folded into constants at load
        options.add_session_config_entry("session.disable_quant_qdq", "1")  # (kept per call otherwise: 3× LeViT)
    if threads is not None:
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | Path, overwrite: bool = False,
                opset: int = 17) -> Path:
    """Export a calibrated quantized model (batch dimension dynamic)."""
    path = Path(path)
    if opset < 13:
        raise ExportError(f"opset={opset}: per-channel DequantizeLinear needs opset 13 or later")
    check_output(path, overwrite)
    if not is_calibrated(model):
        raise ExportError("model is not calibrated: calibrate (or load a searched checkpoint) before export")
    path.parent.mkdir(parents=True, exist_ok=True)
    with export_mode(model, opset), torch.no_grad(), atomic_path(path) as tmp:  # never a partial or truncated file
        torch.onnx.export(model, (example,), str(tmp), input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset,
                          dynamo=False)
    return path
