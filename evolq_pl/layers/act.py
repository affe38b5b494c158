"""Activation quantization points: ordinary (A8, per tensor) and residual-stream PTF (P8, per channel)."""
from __future__ import annotations

from torch import nn

from evolq_pl.quant.config import QuantConfig
from evolq_pl.quant.quantizer import UniformQuantizer


class QAct(UniformQuantizer):
    """A named activation quantization point (``kind`` is ``act`` or ``ptf``) ."""

    def __init__(self, cfg: QuantConfig, kind: str = "act") -> None:
        ptf = kind == "ptf" and cfg.ptf
        super().__init__(cfg.a_type, "ptf" if ptf else cfg.a_observer, per_channel=ptf)
        self.kind = "ptf" if ptf else "act"


def act(cfg: QuantConfig) -> QAct:
    return QAct(cfg, "act")


def stream(cfg: QuantConfig) -> QAct:
    """Quantizer of a residual stream / LayerNorm input: PTF when ``cfg.ptf``, else an ordinary A8."""
    return QAct(cfg, "ptf")


def bind(owner: nn.Module, name: str, target: nn.Module) -> None:
    """Reference ``target`` from ``owner`` without registering it as a child (it lives elsewhere in the tree)."""
    object.__setattr__(owner, name, target)

