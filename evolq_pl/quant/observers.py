"""Observers: running statistics → (scale, zero point) (reference §2). Registered by name.

Contract: the quantizer hands every observer a 2-D view ``(C, M)`` of the tensor (channels first).
``update`` accumulates over calibration batches; ``compute(last)`` turns the statistics (and, for the
MSE-based observers, which set ``needs_data``, the last calibration batch) into flat ``(C,)`` tensors, or
``(1,)`` for per-tensor.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from evolq_pl.errors import EvolQError
from evolq_pl.quant.bittype import BitType
from evolq_pl.quant.functional import affine_params, fake_quant

OBSERVERS: dict[str, type["Observer"]] = {}


def register_observer(name: str) -> Callable[[type["Observer"]], type["Observer"]]:
    def wrap(cls: type[Observer]) -> type[Observer]:
        OBSERVERS[name] = cls
        cls.name = name
        return cls
    return wrap


def build_observer(name: str, bit_type: BitType, per_channel: bool) -> "Observer":
    if name not in OBSERVERS:
        raise EvolQError(f"unknown observer {name!r}; accepted: {', '.join(sorted(OBSERVERS))}")
    return OBSERVERS[name](bit_type, per_channel)


class Observer(nn.Module):
    """Running min/max per channel (or collapsed to one value per tensor)."""

    name = "base"
    needs_data = False  # compute() searches on the last batch (OMSE, PTF)

    def __init__(self, bit_type: BitType, per_channel: bool) -> None:
        super().__init__()
        self.bit_type, self.per_channel = bit_type, per_channel
        self.min_val: torch.Tensor | None = None
        self.max_val: torch.Tensor | None = None

    def _batch_range(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = x.amin(dim=1), x.amax(dim=1)  # (C,)
        return lo, hi

    def _collapse(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (lo, hi) if self.per_channel else (lo.min().reshape(1), hi.max().reshape(1))

    def update(self, x: torch.Tensor) -> None:
        lo, hi = self._collapse(*self._batch_range(x.detach()))
        if self.min_val is None:
            self.min_val, self.max_val = lo, hi
        else:
            self.min_val, self.max_val = torch.minimum(self.min_val, lo), torch.maximum(self.max_val, hi)

    def _params(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return affine_params(lo, hi, self.bit_type.lower, self.bit_type.upper, symmetric=self.bit_type.signed)

    def compute(self, last: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.min_val is None:
            raise RuntimeError(f"{self.name} observer has seen no data")
        return self._params(self.min_val, self.max_val)

    def reset(self) -> None:
        self.min_val = self.max_val = None


@register_observer("minmax")
class MinMaxObserver(Observer):
    """Elementwise running min/max over all batches (reference §2.1)."""


@register_observer("ema")
class EmaObserver(Observer):
    """First batch initialises; later batches move min/max by 1% towards the batch's (reference §2.2)."""

    momentum = 0.01

    def update(self, x: torch.Tensor) -> None:
        lo, hi = self._collapse(*self._batch_range(x.detach()))
        if self.min_val is None:
            self.min_val, self.max_val = lo, hi
        else:
            self.min_val = self.min_val + self.momentum * (lo - self.min_val)
            self.max_val = self.max_val + self.momentum * (hi - self.max_val)


@register_observer("percentile")
class PercentileObserver(EmaObserver):
    """Per-tensor 1e-5 / 0.99999 quantiles per batch, combined by EMA (reference §2.4)."""

    def __init__(self, bit_type: BitType, per_channel: bool) -> None:
        if per_channel:
            raise EvolQError("the percentile observer is per-tensor only (reference §2.4); use minmax/omse per channel")
        super().__init__(bit_type, per_channel)

    def _batch_range(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = x.reshape(-1).float()
        if flat.numel() > 2**24 - 1:  # torch.quantile's input limit: sample deterministically
            flat = flat[:: flat.numel() // (2**24 - 1) + 1]
        qs = torch.quantile(flat, torch.tensor([1e-5, 0.99999], device=flat.device))
        return qs[:1], qs[1:]


@register_observer("omse")
class OmseObserver(Observer):
    """Running min/max, then 90 shrink factors 1.00..0.11 applied to both ends, always asymmetric; the
    factor with the lowest MSE over all elements of the last batch wins, shared by all channels (§2.3)."""

    factors = tuple(1.0 - 0.01 * i for i in range(90))
    needs_data = True

    def compute(self, last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.min_val is None:
            raise RuntimeError("omse observer has seen no data")
        lower, upper = self.bit_type.lower, self.bit_type.upper
        x = last.detach()
        params = [affine_params(f * self.min_val, f * self.max_val, lower, upper, symmetric=False) for f in self.factors]
        # every factor's MSE stays on the device; one argmin (the first minimum, as a strict '<' scan) and one sync;
        # the error is formed in one fake-quant buffer, reused by every factor
        buf = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        errs = torch.stack([fake_quant(x, s[:, None], z[:, None], lower, upper, buf).sub_(x).pow_(2).mean()
                            for s, z in params])
        i = int(errs.argmin())
        self.min_val, self.max_val = self.factors[i] * self.min_val, self.factors[i] * self.max_val
        return params[i]


@register_observer("ptf")
class PtfObserver(Observer):
    """Power-of-two factors (reference §2.5): base scale s8 from the global range, one shared zero point;
    each channel picks s8·2^(α−3), α ∈ {0..3}, by its own MSE on the last batch (ties → smaller scale)."""

    needs_data = True

    def __init__(self, bit_type: BitType, per_channel: bool = True) -> None:
        super().__init__(bit_type, per_channel=True)

    def compute(self, last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.min_val is None:
            raise RuntimeError("ptf observer has seen no data")
        lower, upper = self.bit_type.lower, self.bit_type.upper
        s8, z = affine_params(self.min_val.min(), self.max_val.max(), lower, upper, symmetric=False)
        x = last.detach()  # (C, M)
        candidates = s8 * torch.tensor([0.125, 0.25, 0.5, 1.0], device=x.device, dtype=x.dtype)  # s1, s2, s4, s8
        buf = torch.empty(x.shape, dtype=x.dtype, device=x.device)  # contiguous (C, M), as a fresh output was
        errs = torch.stack([fake_quant(x, s, z, lower, upper, buf).sub_(x).pow_(2).mean(dim=1)
                            for s in candidates])  # (4, C)
        alpha = errs.argmin(dim=0)  # first minimum → smallest scale on ties
        return candidates[alpha], z.expand(x.shape[0]).clone()
