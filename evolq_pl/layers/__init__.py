"""Quantized layers (depends on ``evolq_pl.quant`` only)."""
from evolq_pl.layers.act import QAct, act, bind, stream
from evolq_pl.layers.linear import QConv2d, QLinear
from evolq_pl.layers.norm import QLayerNorm
from evolq_pl.layers.softmax import QSoftmax

__all__ = ["QAct", "act", "bind", "stream", "QConv2d", "QLinear", "QLayerNorm", "QSoftmax"]
