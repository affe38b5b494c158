"""Pure quantization math (reference §1–5). Every function is stateless and typed."""
from __future__ import annotations

import math

import torch


class _RoundSTE(torch.autograd.Function):
    """round() in the forward pass, identity gradient in the backward pass."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad


def _pow2(x: torch.Tensor) -> torch.Tensor:
    """2^x for integer-valued x (±inf, NaN pass through), equal to pow(2, x) bit for bit (tested over
    −200…200); exp2 is about 10× faster than pow on CPU."""
    return torch.exp2(x)


def all_finite(x: torch.Tensor) -> bool:
    """No NaN or infinity in ``x``: one min/max pass (NaN propagates through both), no x-sized mask (a bool mask per
    calibration tensor was a heap-sized temporary that glibc kept resident: BENCHMARKS.md, calibration memory)."""
    if x.numel() == 0:
        return True
    lo, hi = torch.aminmax(x)
    return bool(torch.isfinite(lo) & torch.isfinite(hi))


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round half to even; straight-through gradient when autograd is recording."""
    return _RoundSTE.apply(x) if x.requires_grad else torch.round(x)


def quant_codes(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, lower: int,
                upper: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """The integer codes q = clamp(round(x/s + z), lower, upper), as floats; ``scale``/``zero_point`` broadcast.
    ``out``: a contiguous buffer of x's shape, not aliasing x, to write them into (eager inference only: ignored
    when autograd records; a search over candidate grids reuses one buffer instead of faulting in a fresh one)."""
    if x.requires_grad and torch.is_grad_enabled():
        return torch.clamp(round_ste(x / scale + zero_point), lower, upper)
    # inference: one buffer (PyTorch's fused fake-quant kernels multiply by 1/s, which moves near-tie values
    # by a step, and are slower on CPU)
    out = layout_buffer(x, scale) if out is None else out
    q = x.div(scale) if out is None else torch.div(x, scale, out=out)
    return q.add_(zero_point).round_().clamp_(lower, upper)


def layout_buffer(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor | None:
    """Where ``quant_codes`` writes the codes of x / ``scale``: None (a fresh tensor) for a contiguous x, else a
    buffer contiguous in x's logical order, so that a permuted or transposed view comes out ready for the next
    matmul, the layout change riding on the division instead of a copy of its own."""
    # a compiled graph lays out its own buffers, and dynamo mistakes the strides of a div(out=): any compile, inside
    # quant.exact's context or a user's own, gets none
    if x.is_contiguous() or torch.compiler.is_compiling():
        return None
    return torch.empty(x.shape, dtype=torch.result_type(x, scale), device=x.device)


def fake_quant(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, lower: int, upper: int,
               out: torch.Tensor | None = None) -> torch.Tensor:
    """x̂ = (clamp(round(x/s + z), lower, upper) − z)·s; ``scale``/``zero_point`` broadcast against x."""
    q = quant_codes(x, scale, zero_point, lower, upper, out)
    return (q - zero_point) * scale if q.requires_grad else q.sub_(zero_point).mul_(scale)


def affine_params(min_val: torch.Tensor, max_val: torch.Tensor, lower: int, upper: int,
                  symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point of a min/max range (reference §2.1).

    Symmetric: s = max(|min|, max) / ((upper − lower)/2), z = 0 (so int4 divides by 7.5, not 7).
    Asymmetric: s = (max − min)/(upper − lower), z = clamp(lower − round(min/s), lower, upper).
    s is clamped below at float32 eps.

    Departure from the reference: a degenerate range (max − min < eps, e.g. a softmax over a single key,
    which is constantly 1) is widened to include 0, so the constant stays representable instead of
    collapsing to ~eps·upper.
    """
    eps = torch.finfo(torch.float32).eps
    degenerate = (max_val - min_val) < eps
    min_val = torch.where(degenerate, torch.clamp(min_val, max=0.0), min_val)
    max_val = torch.where(degenerate, torch.clamp(max_val, min=0.0), max_val)
    if symmetric:
        scale = (torch.maximum(-min_val, max_val) / ((upper - lower) / 2)).clamp_min(eps)
        return scale, torch.zeros_like(scale)
    scale = ((max_val - min_val) / (upper - lower)).clamp_min(eps)
    zero_point = torch.clamp(lower - torch.round(min_val / scale), lower, upper)
    return scale, zero_point


def int_exp(x_int: torch.Tensor, scale: float) -> torch.Tensor:
    """I-BERT integer exp of non-positive integer logits with scale ``scale`` (reference §3 step 2).

    The output's own scale cancels in the softmax, so it is not returned.
    """
    x0 = math.floor(-0.6931 / scale)  # ln 2 in integer units (negative)
    x_int = torch.maximum(x_int, torch.full_like(x_int, 30 * x0))
    q = torch.floor(x_int / x0)
    r = x_int - q * x0
    b_int = math.floor((0.96963238 / 0.35815147) / scale)
    c_int = math.floor((1.0 / 0.35815147) / scale**2)
    poly = r * (r + b_int) + c_int
    return torch.clamp(torch.floor(poly * _pow2(30 - q)), min=0)


def log_int_softmax(logits: torch.Tensor, scale: float | torch.Tensor, bits: int = 4) -> torch.Tensor:
    """Log-int softmax over the last dim (reference §3): values in {2^−k, k < 2^b} ∪ {0}. ``scale``: the input
    quantizer's per-tensor scale (a float, or its one-element tensor)."""
    scale = float(scale)
    x_int = logits / scale
    x_int = x_int - x_int.amax(dim=-1, keepdim=True)
    exp_int = int_exp(x_int, scale)
    inv = torch.round(exp_int.sum(dim=-1, keepdim=True) / exp_int)  # ≈ 1/p (inf where exp_int = 0)
    k = torch.floor(torch.log2(inv))
    k = torch.where(inv - _pow2(k) >= _pow2(k - 1), k + 1, k)
    out = _pow2(-torch.clamp(k, 0, 2**bits - 1))
    return torch.where(k >= 2**bits, torch.zeros_like(out), out)


def channel_stats(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel mean and unbiased std, shaped (O, 1)."""
    flat = w.reshape(w.shape[0], -1)  # (O, I·k·k)
    return flat.mean(1, keepdim=True), flat.std(1, keepdim=True)


def bias_correct_to(w_hat: torch.Tensor, mu: torch.Tensor, sd: torch.Tensor) -> torch.Tensor:
    """Give each output channel of ``w_hat`` the mean ``mu`` and std ``sd`` (both (O, 1)).

    In the published code's operation order, ((ŵ − μ̂)·(σ/(σ̂ + 1e-8)) + μ̂) − μ̂ + μ: the algebraically
    redundant + μ̂ − μ̂ changes the last bit of some weights, and those bits flip later roundings.
    """
    mu_hat, ratio = bias_correction_terms(w_hat, sd)
    flat = w_hat.reshape(w_hat.shape[0], -1)  # (O, I·k·k)
    return (((flat - mu_hat) * ratio + mu_hat) - mu_hat + mu).reshape(w_hat.shape)


def bias_correction_terms(w_hat: torch.Tensor, sd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The correction's per-channel constants besides μ: μ̂ and σ/(σ̂ + 1e-8) of ``bias_correct_to`` (both (O, 1))."""
    mu_hat, sd_hat = channel_stats(w_hat)
    return mu_hat, sd / (sd_hat + 1e-8)


def bias_correct(w: torch.Tensor, w_hat: torch.Tensor) -> torch.Tensor:
    """Per-output-channel mean/std correction of dequantized weights (reference §5, unbiased std)."""
    return bias_correct_to(w_hat, *channel_stats(w))


def pow2_multiplier(a: torch.Tensor, max_shift: int = 31, mult_bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Represent |a| ≈ M·2^−N, N = clamp(7 − floor(log2|a|), 0, 31), M = clamp(floor(|a|·2^N), 0, 255).
    Returns (M, 2^N)."""
    a_abs = a.abs()
    shift = _pow2(torch.log2(a_abs).floor_().neg_().add_(mult_bits - 1).clamp_(0, max_shift))
    return a_abs.mul_(shift).floor_().clamp_(0, 2**mult_bits - 1), shift


def code_moments(x_q: torch.Tensor, s_min: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std over the last dim of x̃·s_min, x̃ (..., C) integers on the s_min grid, in the published code's
    order: the mean of the codes, then the scale; the std from the sums of the codes and of their squares (float32
    sums past 2^24 round by summation order). Returns two (..., 1) tensors."""
    c = x_q.shape[-1]
    sum_x, sum_x2 = x_q.sum(-1, keepdim=True), (x_q * x_q).sum(-1, keepdim=True)
    mean = x_q.mean(-1, keepdim=True) * s_min
    std = ((s_min / c) * torch.sqrt((c * sum_x2 - sum_x * sum_x).clamp_min(0))).clamp_min(1e-12)
    return mean, std


def int_layernorm(x: torch.Tensor, in_scale: torch.Tensor, out_scale: torch.Tensor, weight: torch.Tensor,
                  bias: torch.Tensor) -> torch.Tensor:
    """Integer LayerNorm over the last dim (reference §4.3).

    Args:
        x: dequantized input (..., C) on the PTF grid of ``in_scale`` (per channel, shape (C,)).
        in_scale: per-channel PTF input scales s_c.
        out_scale: per-tensor scale s_o of the following quantizer.
        weight, bias: LayerNorm γ and β.
    Returns the dequantized output y_q·s_o (not clamped; the next quantizer clamps). eps is ignored.
    """
    s_min = in_scale.min()
    x_q = x.div(in_scale).round_().mul_(torch.round(in_scale / s_min))  # x̃: integers on the s_min grid
    mean, std = code_moments(x_q, s_min)  # (..., 1) each
    a = ((s_min / std) * weight).div_(out_scale)  # (..., C)
    m, shift = pow2_multiplier(a)
    b = ((mean / std) * weight).neg_().add_(bias).div_(out_scale).mul_(shift).round_()
    return m.mul_(torch.sign(a)).mul_(x_q).add_(b).div_(shift).round_().mul_(out_scale)
