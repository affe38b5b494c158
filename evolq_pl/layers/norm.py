"""LayerNorm that switches to the integer LayerNorm of FQ-ViT when quantization is on (reference §4.3)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from evolq_pl.quant.config import QuantConfig
from evolq_pl.quant.functional import int_layernorm
from evolq_pl.quant.modes import QuantSwitch
from evolq_pl.quant.quantizer import UniformQuantizer


class QLayerNorm(QuantSwitch, nn.LayerNorm):
    """Float LayerNorm, or — quantization on and ``int_mode`` — integer LayerNorm fed by the PTF input
    quantizer's per-channel scales and producing values on the output quantizer's grid."""

    int_mode: bool = True

    @classmethod
    def from_float(cls, mod: nn.LayerNorm, cfg: QuantConfig) -> "QLayerNorm":
        new = cls(mod.normalized_shape, eps=mod.eps, elementwise_affine=mod.elementwise_affine,
                  device=mod.weight.device, dtype=mod.weight.dtype)
        new.load_state_dict(mod.state_dict())
        new.int_mode = cfg.int_layernorm
        return new

    def forward(self, x: torch.Tensor, in_quant: UniformQuantizer | None = None,
                out_quant: UniformQuantizer | None = None, in_repeat: int = 1) -> torch.Tensor:
        """``in_repeat``: the input's channels are ``in_repeat`` copies of ``in_quant``'s channels side by side
        (Swin's patch merging concatenates 2×2 neighbours), so its per-channel scales are tiled that often."""
        use_int = self.int_mode and self.enabled and not self.calibrating and in_quant is not None
        if use_int and in_quant.enabled and out_quant is not None and out_quant.enabled:
            in_scale = in_quant.scale.repeat(in_repeat) if in_repeat > 1 and in_quant.scale.numel() > 1 \
                else in_quant.scale  # no copy in the usual case
            return int_layernorm(x, in_scale, out_quant.scale, self.weight, self.bias)
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", int_mode={self.int_mode}"
