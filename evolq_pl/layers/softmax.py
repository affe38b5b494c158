"""Quantized softmax: float softmax + uniform output quantizer, or log-int softmax (reference §3)."""
from __future__ import annotations

import torch
from torch import nn

from evolq_pl.quant.config import QuantConfig
from evolq_pl.quant.bittype import BitType
from evolq_pl.quant.functional import log_int_softmax
from evolq_pl.quant.modes import QuantSwitch
from evolq_pl.quant.quantizer import UniformQuantizer


class QSoftmax(QuantSwitch, nn.Module):
    """Softmax over the last dim, quantized at its output.

    ``lis=False``: float softmax then a uniform per-tensor quantizer (the Evol-Q default).
    ``lis=True``: the 4-bit log-int softmax of FQ-ViT, computed from the integer logits of the
    quantizer feeding it (its scale is passed as ``in_quant``).
    """

    def __init__(self, cfg: QuantConfig) -> None:
        super().__init__()
        self.lis = cfg.lis
        self.lis_bits = 4
        # with log-int softmax the uniform output quantizer is never used (nor calibrated, as published)
        self.quantizer = nn.Identity() if cfg.lis else UniformQuantizer(BitType(cfg.softmax_bits), cfg.a_observer)

    def forward(self, logits: torch.Tensor, in_quant: UniformQuantizer | None = None) -> torch.Tensor:
        if self.lis and in_quant is not None and self._lis_active(in_quant):
            return log_int_softmax(logits, in_quant.scale, self.lis_bits)
        return self.quantizer(torch.softmax(logits, dim=-1))

    def _lis_active(self, in_quant: UniformQuantizer) -> bool:
        """Quantized forward with its input quantizer on; or, as in the published code, the last calibration
        batch, on which the input quantizer already has its scale: later observers see log-int outputs."""
        if self.calibrating:
            return self.last_batch
        return self.enabled and in_quant.enabled
