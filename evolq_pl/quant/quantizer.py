"""Quantizer modules: an observer plus a fake-quant grid, with explicit calibrate / quantize modes."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from evolq_pl.quant.bittype import BitType
from evolq_pl.quant.functional import fake_quant, log2_quant
from evolq_pl.quant.modes import NonFiniteError, QuantSwitch
from evolq_pl.quant.observers import build_observer


class NotCalibratedError(RuntimeError):
    pass


def channel_dim_of(x: torch.Tensor, is_weight: bool) -> int:
    """Weights: output channel = dim 0. Activations: last dim, or dim 1 of a 4-D (N, C, H, W) map (§2)."""
    if is_weight:
        return 0
    return 1 if x.dim() == 4 else x.dim() - 1


def channels_first(x: torch.Tensor, dim: int) -> torch.Tensor:
    """(…, C, …) → (C, M) view/copy with the channel dim first."""
    return x.movedim(dim, 0).reshape(x.shape[dim], -1)


class UniformQuantizer(QuantSwitch, nn.Module):
    """Affine fake quantizer q = clamp(round(x/s + z)), x̂ = (q − z)·s, per tensor or per channel.

    Modes (set by the context managers in ``evolq_pl.quant.modes``):
      * ``calibrating``: the observer sees the float tensor, which passes through unchanged;
      * ``enabled`` (after calibration): fake quantization; disabled: identity.

    ``scale``/``zero_point`` are stored flat, ``(C,)`` or ``(1,)``, and broadcast along the channel dim.
    """

    def __init__(self, bit_type: BitType, observer: str = "minmax", per_channel: bool = False,
                 is_weight: bool = False) -> None:
        super().__init__()
        self.bit_type, self.observer_name = bit_type, observer
        self.per_channel, self.is_weight = per_channel, is_weight
        self.observer = build_observer(observer, bit_type, per_channel)
        self.register_buffer("scale", torch.ones(0))
        self.register_buffer("zero_point", torch.zeros(0))
        self.calibrating = False
        self.enabled = True
        self.onnx_qdq = False  # set by evolq_pl.export.onnx_io while exporting
        self._last: torch.Tensor | None = None

    @property
    def calibrated(self) -> bool:
        return self.scale.numel() > 0

    def observe(self, x: torch.Tensor) -> None:
        """Feed one calibration tensor; the last one is kept for the MSE-based observers."""
        if not torch.isfinite(x).all():
            raise NonFiniteError(f"non-finite values (NaN/inf) in a quantizer input of shape {tuple(x.shape)}", self)
        view = channels_first(x.detach(), channel_dim_of(x, self.is_weight))
        self.observer.update(view)
        self._last = view

    def finalize(self) -> None:
        """Compute scale/zero point from the observed statistics (end of calibration)."""
        if self._last is None:
            return  # never reached in calibration (e.g. an unused branch); stays uncalibrated
        scale, zero_point = self.observer.compute(self._last)
        self.scale, self.zero_point = scale.detach().clone(), zero_point.detach().clone()
        self._last = None
        self.observer.reset()

    def broadcast(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Flat (C,) parameters → shape broadcastable against x along its channel dim."""
        if t.numel() == 1:
            return t
        shape = [1] * x.dim()
        shape[channel_dim_of(x, self.is_weight)] = -1
        return t.view(shape)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        if not self.calibrated:
            raise NotCalibratedError("quantizer used before calibration: run evolq_pl.calibrate(model, batches) first")
        if self.onnx_qdq:
            return self._qdq(x)
        return fake_quant(x, self.broadcast(self.scale, x), self.broadcast(self.zero_point, x),
                          self.bit_type.lower, self.bit_type.upper)

    def _qdq(self, x: torch.Tensor) -> torch.Tensor:
        """PyTorch's fake-quant ops, which export to ONNX QuantizeLinear → DequantizeLinear (x·(1/s) rounding)."""
        lo, hi = self.bit_type.lower, self.bit_type.upper
        zp = self.zero_point.round().to(torch.int32)
        if self.scale.numel() == 1:
            return torch.fake_quantize_per_tensor_affine(x, self.scale.float(), zp, lo, hi)
        return torch.fake_quantize_per_channel_affine(x, self.scale, zp, channel_dim_of(x, self.is_weight), lo, hi)

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """The integer codes q = clamp(round(x/s + z)) (as floats), same arithmetic as ``quantize``."""
        s, z = self.broadcast(self.scale, x), self.broadcast(self.zero_point, x)
        return x.detach().div(s).add_(z).round_().clamp_(self.bit_type.lower, self.bit_type.upper)

    def dequantize(self, q: torch.Tensor) -> torch.Tensor:
        """(q − z)·s: with ``codes`` this reproduces ``quantize`` exactly."""
        return (q - self.broadcast(self.zero_point, q)).mul_(self.broadcast(self.scale, q))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            self.observe(x)
            return x
        return self.quantize(x) if self.enabled else x

    def set_scale(self, scale: torch.Tensor) -> None:
        """Replace the flat scale in place (same shape); zero points stay fixed."""
        if scale.shape != self.scale.shape:
            raise ValueError(f"scale of shape {tuple(scale.shape)} given, expected {tuple(self.scale.shape)}")
        self.scale.copy_(scale)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        for name in ("scale", "zero_point"):  # calibrated sizes are only known after calibration
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name], device=self.scale.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        gran = "per-channel" if self.per_channel else "per-tensor"
        return f"{self.bit_type.name}, {gran}, observer={self.observer_name}, calibrated={self.calibrated}"


class Log2Quantizer(QuantSwitch, nn.Module):
    """Log2 quantizer for softmax outputs (reference §1.3); needs no calibration."""

    def __init__(self, bit_type: BitType) -> None:
        super().__init__()
        self.bit_type = bit_type
        self.calibrating = False
        self.enabled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return log2_quant(x, self.bit_type.bits) if self.enabled and not self.calibrating else x
