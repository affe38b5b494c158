"""Integer weight initializers for the ONNX export: each weight layer's codes are stored as int8/uint8 and the
weight the forward multiplies by is recomputed in the graph, bit for bit:
DequantizeLinear(codes, s, z, axis=0), then, with bias correction, ((ŵ − μ̂)·r + μ̂) − μ̂ + μ with the per-channel
constants μ̂, r = σ/(σ̂ + 1e-8), μ of ``quant.functional.bias_correct_to`` (every step one float32 rounding, as
in PyTorch). A W4 model's file is about a quarter of its float size; onnxruntime may fold the subgraph into a
float constant when it loads the model (the same values).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from evolq_pl.layers import QConv2d, QLinear
from evolq_pl.quant.functional import bias_correction_terms, channel_stats


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
    if not layer.bias_correction:
        return terms
    w_hat = wq.quantize(layer.weight)  # ŵ as the layer computes it
    mu, sd = channel_stats(layer.weight)
    shape = (-1,) + (1,) * (w.dim() - 1)
    return terms + tuple(t.reshape(shape) for t in (*bias_correction_terms(w_hat, sd), mu))


@contextmanager
def integer_weights(model: nn.Module) -> Iterator[nn.Module]:
    """For the duration: every quantized weight layer hands the exporter its integer recomputation (an instance
    attribute shadowing the layer's one hook, ``quantized_weight``, removed on exit whatever happens)."""
    layers = [m for m in model.modules() if isinstance(m, (QLinear, QConv2d)) and m.weight_quantizer.enabled]
    try:
        with torch.no_grad():
            for layer in layers:
                terms = _terms(layer)
                layer.quantized_weight = lambda terms=terms: _DequantizedWeight.apply(*terms)
        yield model
    finally:
        for layer in layers:
            layer.__dict__.pop("quantized_weight", None)
