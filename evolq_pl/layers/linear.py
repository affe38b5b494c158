"""Weight-quantized Linear and Conv2d (per output channel), with optional bias correction (reference §5)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from evolq_pl.quant.config import QuantConfig
from evolq_pl.quant.exact import aten_bits
from evolq_pl.quant.functional import bias_correct, fake_quant
from evolq_pl.quant.quantizer import UniformQuantizer


@aten_bits()  # compiled: inductor's reductions (the correction's mean and std) differ from ATen's in the last bit
def fake_quant_weight(weight: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, lower: int, upper: int,
                     bias_correction: bool) -> torch.Tensor:
    """Fake-quantized (and bias-corrected) weight; ``scale``/``zero_point`` already broadcast against it."""
    w_hat = fake_quant(weight, scale, zero_point, lower, upper)
    return bias_correct(weight, w_hat) if bias_correction else w_hat


def weight_quantizer(cfg: QuantConfig) -> UniformQuantizer:
    return UniformQuantizer(cfg.w_type, cfg.w_observer, per_channel=True, is_weight=True)


class _QWeight:
    """Shared weight path: observe during calibration; fake-quant (+ bias correction), cached per scale version."""

    weight: torch.Tensor
    weight_quantizer: UniformQuantizer
    bias_correction: bool

    def _init_quant(self, cfg: QuantConfig) -> None:
        self.weight_quantizer = weight_quantizer(cfg)
        self.bias_correction = cfg.bias_correction
        self._cache: tuple[tuple[int, ...], torch.Tensor] | None = None
        self._frozen: torch.Tensor | None = None

    def _cache_key(self) -> tuple[int, ...]:
        s, z, w = self.weight_quantizer.scale, self.weight_quantizer.zero_point, self.weight
        return (s._version, s.data_ptr(), z._version, z.data_ptr(), w._version, w.data_ptr())

    def quantized_weight(self) -> torch.Tensor:
        """Dequantized weight; recomputed only when the scale, zero point or weight changed.

        Under ``torch.compile`` it is computed at every call (an opaque op, ``evolq_pl.quant.exact``): a Python-side
        cache keyed on tensor versions would make dynamo guard on the key and recompile after every scale change.
        """
        if torch.compiler.is_compiling() or (torch.is_grad_enabled() and self.weight.requires_grad):
            return self._compute_weight()
        key = self._cache_key()
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self._compute_weight())
        return self._cache[1]

    def _compute_weight(self) -> torch.Tensor:
        return fake_quant_weight(self.weight, *self.weight_quantizer.grid(self.weight), self.bias_correction)

    def freeze(self, effective: torch.Tensor) -> None:
        """Use ``effective`` as the quantized weight (a model rebuilt from an export has no float weights)."""
        self._frozen = effective

    def effective_weight(self) -> torch.Tensor:
        wq = self.weight_quantizer
        if self._frozen is not None and wq.enabled and not wq.calibrating:
            return self._frozen
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
