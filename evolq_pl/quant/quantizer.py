"""Quantizer modules: an observer plus a fake-quant grid, with explicit calibrate / quantize modes."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn

from evolq_pl.errors import EvolQError
from evolq_pl.quant.bittype import BitType
from evolq_pl.quant.functional import all_finite, fake_quant, quant_codes
from evolq_pl.quant.modes import NonFiniteError, QuantSwitch
from evolq_pl.quant.observers import build_observer


class NotCalibratedError(EvolQError, RuntimeError):
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
      * ``calibrating``: the observer sees the float tensor, which passes through unchanged; on the last
        calibration batch (``last_batch``) the parameters are computed at once from that batch, as FQ-ViT
        does, so no calibration tensor is kept;
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
        self._computed = False  # parameters computed in the current calibration
        self._before = (self.scale, self.zero_point)  # put back if a calibration fails

    @property
    def calibrated(self) -> bool:
        return self.scale.numel() > 0

    def observe(self, x: torch.Tensor) -> None:
        """Feed one calibration tensor; on the last batch, compute the parameters from it."""
        if not all_finite(x):
            raise NonFiniteError(f"non-finite values (NaN/inf) in a quantizer input of shape {tuple(x.shape)}", self)
        x = x.detach()
        # (C, M), or (1, N) per tensor: a view in the tensor's own order (no copy; the published code's
        # MSE sums in that order too)
        view = channels_first(x, channel_dim_of(x, self.is_weight)) if self.per_channel else x.reshape(1, -1)
        self.observer.update(view)
        if self.last_batch:
            self._set(*self.observer.compute(view))
            self._computed = True

    def _set(self, scale: torch.Tensor, zero_point: torch.Tensor) -> None:
        self.scale, self.zero_point = scale.detach().clone(), zero_point.detach().clone()

    def begin_calibration(self) -> None:
        self.observer.reset()
        self._computed, self._before = False, (self.scale, self.zero_point)

    def abort_calibration(self) -> None:
        self.scale, self.zero_point = self._before
        self._computed = False
        self.observer.reset()

    def finalize(self) -> str | None:
        """End of calibration. A quantizer that the last batch did not reach gets its parameters from its
        statistics when its observer needs no data (min/max, ema, percentile); one whose observer searches on
        the last batch (OMSE, PTF) cannot: it stays as it was and the problem is returned."""
        computed, self._computed = self._computed, False
        problem = None
        if self.observer.min_val is not None and not computed:
            if self.observer.needs_data:
                problem = f"its {self.observer_name} observer saw calibration data but no last batch"
            else:
                self._set(*self.observer.compute(None))
        self.observer.reset()
        return problem

    def broadcast(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Flat (C,) parameters → shape broadcastable against x along its channel dim."""
        if t.numel() == 1:
            return t
        shape = [1] * x.dim()
        shape[channel_dim_of(x, self.is_weight)] = -1
        return t.view(shape)

    def check_calibrated(self) -> None:
        if not self.calibrated:
            raise NotCalibratedError("quantizer used before calibration: run evolq_pl.calibrate(model, batches) first")

    def grid(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """(scale, zero point) broadcast against ``x``, and the code range: the arguments of ``fake_quant``."""
        self.check_calibrated()
        return self.broadcast(self.scale, x), self.broadcast(self.zero_point, x), self.bit_type.lower, \
            self.bit_type.upper

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        return fake_quant(x, *self.grid(x))

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """The integer codes q = clamp(round(x/s + z)) (as floats), the arithmetic of ``quantize``."""
        return quant_codes(x.detach(), *self.grid(x))

    def dequantize(self, q: torch.Tensor) -> torch.Tensor:
        """(q − z)·s: with ``codes`` this reproduces ``quantize`` exactly."""
        return (q - self.broadcast(self.zero_point, q)).mul_(self.broadcast(self.scale, q))

    def forward(self, x: torch.Tensor, layout: tuple[int, ...] | None = None) -> torch.Tensor:
        """Quantize ``x`` (observe it while calibrating). ``layout``: return ``x.permute(layout)``, contiguous
        when quantized; the observer sees ``x`` in its own order (calibration statistics are order-exact).
        Per-tensor quantizers only (a per-channel one would broadcast along the permuted channel dim)."""
        if layout is not None and self.per_channel:
            raise EvolQError(f"layout={layout}: only per-tensor quantizers take a layout")
        if self.calibrating:
            self.observe(x)
        elif self.enabled:
            return self.quantize(x if layout is None else x.permute(layout))
        return x if layout is None else x.permute(layout)

    def set_scale(self, scale: torch.Tensor) -> None:
        """Replace the flat scale in place (same shape); zero points stay fixed."""
        if scale.shape != self.scale.shape:
            raise EvolQError(f"scale of shape {tuple(scale.shape)} given, expected {tuple(self.scale.shape)}")
        self.scale.copy_(scale)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        for name in ("scale", "zero_point"):  # calibrated sizes are only known after calibration
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name], device=self.scale.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        gran = "per-channel" if self.per_channel else "per-tensor"
        return f"{self.bit_type.name}, {gran}, observer={self.observer_name}, calibrated={self.calibrated}"


def quantizers(model: nn.Module) -> dict[str, UniformQuantizer]:
    """Every uniform quantizer of ``model`` by module name, in module order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, UniformQuantizer)}


def is_calibrated(model: nn.Module) -> bool:
    """True when every quantizer of ``model`` has its parameters (the one calibration check)."""
    return all(q.calibrated for q in quantizers(model).values())


def snapshot_scales(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every quantizer's scale, by module name (zero points never change after calibration)."""
    return {name: q.scale.detach().clone() for name, q in quantizers(model).items()}


def load_scales(model: nn.Module, scales: dict[str, torch.Tensor]) -> None:
    """Put scales from ``snapshot_scales`` back, in place."""
    found = quantizers(model)
    for name, scale in scales.items():
        found[name].set_scale(scale)


@contextmanager
def scales_loaded(model: nn.Module, scales: dict[str, torch.Tensor] | None) -> Iterator[None]:
    """Temporarily put ``scales`` (from ``snapshot_scales``; None: the current ones) into ``model``."""
    current = snapshot_scales(model)
    load_scales(model, scales or current)
    try:
        yield
    finally:
        load_scales(model, current)
