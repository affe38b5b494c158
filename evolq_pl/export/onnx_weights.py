"""Integer weight initializers for the ONNX export: each weight layer's codes are stored as int8/uint8 and the
weight the forward multiplies by is recomputed in the graph, bit for bit: DequantizeLinear(codes, s, z, axis=0),
then, with bias correction, ((ŵ − μ̂)·r + μ̂) − μ̂ + μ with the per-channel constants μ̂, r = σ/(σ̂ + 1e-8), μ of
``quant.functional.bias_correct_to`` (every step one float32 rounding, as in PyTorch; checked before export).
One byte per weight: an ImageNet-size model's file is about a quarter of its float state dict (BENCHMARKS.md,
export). onnxruntime may fold the subgraph into float constants when it loads the model (the same values).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from evolq_pl.export.output import ExportError
from evolq_pl.layers import QConv2d, QLinear
from evolq_pl.quant.functional import bias_correction_terms


class _DequantizedWeight(torch.autograd.Function):
    """In PyTorch: the forward's weight, computed before tracing. In the ONNX graph: its integer recomputation."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor,  # noqa: ANN001
                zero_point: torch.Tensor, *correction: torch.Tensor) -> torch.Tensor:
        return weight

    @staticmethod
    def symbolic(g, weight, codes, scale, zero_point, *correction):  # noqa: ANN001, ANN205 (exporter symbolic)
        w = g.op("DequantizeLinear", codes, scale, zero_point, axis_i=0)  # (q − z)·s
        if correction:
            mu_hat, ratio, mu = correction
            w = g.op("Add", g.op("Sub", g.op("Add", g.op("Mul", g.op("Sub", w, mu_hat), ratio), mu_hat), mu_hat), mu)
        return w


def _terms(layer: QLinear | QConv2d) -> tuple[torch.Tensor, ...]:
    """(the forward's weight, codes, scale, zero point[, μ̂, r, μ]): codes and zero point in the smallest integer
    type holding the code range, scale and zero point (O,), the bias-correction constants (O, 1, …)."""
    wq = layer.weight_quantizer
    w = layer.quantized_weight().detach()
    dtype = torch.int8 if wq.bit_type.lower < 0 else torch.uint8
    codes = wq.codes(layer.weight).to(dtype)
    terms = (w, codes, wq.scale.reshape(-1).float(), wq.zero_point.reshape(-1).round().to(dtype))
    if layer.bias_correction:
        w_hat = wq.quantize(layer.weight)  # ŵ as the layer computes it
        mu, sd = layer.bias_target()
        shape = (-1,) + (1,) * (w.dim() - 1)
        terms += tuple(t.reshape(shape) for t in (*bias_correction_terms(w_hat, sd), mu))
    return terms


def _recomputed(w: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
                *correction: torch.Tensor) -> torch.Tensor:
    """What the graph computes from ``_terms`` (the symbolic's arithmetic in PyTorch), to check it before export."""
    shape = (-1,) + (1,) * (w.dim() - 1)
    out = (codes.float() - zero_point.float().view(shape)) * scale.view(shape)
    if correction:
        mu_hat, ratio, mu = correction
        out = (((out - mu_hat) * ratio + mu_hat) - mu_hat) + mu
    return out


@contextmanager
def integer_weights(model: nn.Module) -> Iterator[nn.Module]:
    """For the duration: every quantized weight layer hands the exporter its integer recomputation (an instance
    attribute shadowing the layer's one hook, ``quantized_weight``, removed on exit whatever happens)."""
    layers = {n: m for n, m in model.named_modules()
              if isinstance(m, (QLinear, QConv2d)) and m.weight_quantizer.enabled}
    try:
        with torch.no_grad():
            for name, layer in layers.items():
                terms = _terms(layer)
                if not torch.equal(_recomputed(*terms), terms[0]):
                    raise ExportError(f"{name}: its integer form does not give the weight the forward uses")
                layer.quantized_weight = lambda terms=terms: _DequantizedWeight.apply(*terms)
        yield model
    finally:
        for layer in layers.values():
            layer.__dict__.pop("quantized_weight", None)
