"""Weight-quantized Linear and Conv2d (per output channel), with optional bias correction (reference §5)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from evolq_pl.quant.config import QuantConfig
from evolq_pl.quant.functional import bias_correct, channel_stats, fake_quant
from evolq_pl.quant.quantizer import UniformQuantizer


def weight_quantizer(cfg: QuantConfig) -> UniformQuantizer:
    return UniformQuantizer(cfg.w_type, cfg.w_observer, per_channel=True, is_weight=True)


class _QWeight:
    """Shared weight path: observe during calibration; fake-quant (+ bias correction), cached per scale version.

    ``quantized_weight`` is the one hook: a subclass that takes its weight from elsewhere overrides it (a model
    rebuilt from an export, which has no float weights; a compiled forward reading weights computed before it).
    """

    weight: torch.Tensor
    weight_quantizer: UniformQuantizer
    bias_correction: bool

    def _init_quant(self, cfg: QuantConfig) -> None:
        self.weight_quantizer = weight_quantizer(cfg)
        self.bias_correction = cfg.bias_correction
        self._key: tuple[object, ...] | None = None  # what ``_qweight`` was computed from
        self._key_refs: tuple[torch.Tensor, ...] = ()  # those tensors, kept alive so that their ids stay theirs
        self._qweight: torch.Tensor | None = None

    def _cache_key(self) -> tuple[object, ...]:
        s, z, w = self.weight_quantizer.scale, self.weight_quantizer.zero_point, self.weight
        return (id(s), s._version, id(z), z._version, id(w), w._version, self.bias_correction)

    def quantized_weight(self) -> torch.Tensor:
        """The dequantized weight: computed with autograd when the weight is being trained, else from the cache,
        recomputed only when the scale, zero point or weight changed (a new tensor: one handed out earlier keeps
        its values). A cached weight is a plain tensor with no autograd history whatever mode the caller is in
        (validation runs under inference mode)."""
        if torch.is_grad_enabled() and self.weight.requires_grad:
            return self._compute_weight()
        key = self._cache_key()
        if self._qweight is None or key != self._key or self._qweight.is_inference():
            with torch.inference_mode(False), torch.no_grad():
                self._qweight = self._compute_weight()
            q = self.weight_quantizer
            self._key, self._key_refs = key, (q.scale, q.zero_point, self.weight)
        return self._qweight

    def _compute_weight(self) -> torch.Tensor:
        w_hat = fake_quant(self.weight, *self.weight_quantizer.grid(self.weight))
        return bias_correct(self.weight, w_hat) if self.bias_correction else w_hat

    def bias_target(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-output-channel mean and std (both (O, 1)) bias correction gives the dequantized weight: the
        float weight's (a layer rebuilt from an export has them stored instead)."""
        return channel_stats(self.weight)

    def effective_weight(self) -> torch.Tensor:
        wq = self.weight_quantizer
        if wq.calibrating:
            wq.observe(self.weight)
            return self.weight
        return self.quantized_weight() if wq.enabled else self.weight


class QLinear(_QWeight, nn.Linear):
    """nn.Linear whose weight is fake-quantized per output row."""

    @classmethod
    def from_float(cls, mod: nn.Linear, cfg: QuantConfig) -> "QLinear":
        new = cls(mod.in_features, mod.out_features, bias=mod.bias is not None,
                  device=mod.weight.device, dtype=mod.weight.dtype)
        new.load_state_dict(mod.state_dict())
        new._init_quant(cfg)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.bias)


class QConv2d(_QWeight, nn.Conv2d):
    """nn.Conv2d whose weight is fake-quantized per output channel."""

    @classmethod
    def from_float(cls, mod: nn.Conv2d, cfg: QuantConfig) -> "QConv2d":
        new = cls(mod.in_channels, mod.out_channels, mod.kernel_size, stride=mod.stride, padding=mod.padding,
                  dilation=mod.dilation, groups=mod.groups, bias=mod.bias is not None,
                  padding_mode=mod.padding_mode, device=mod.weight.device, dtype=mod.weight.dtype)
        new.load_state_dict(mod.state_dict())
        new._init_quant(cfg)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.effective_weight(), self.bias)
