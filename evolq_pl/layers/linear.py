"""Weight-quantized Linear and Conv2d (per output channel), with optional bias correction (reference §5)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from evolq_pl.quant.config import QuantConfig
from evolq_pl.quant.exact import aten_bits, exact_conv2d, exact_linear
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
        self._key: tuple[object, ...] | None = None  # what ``_qweight`` was computed from
        self._key_refs: tuple[torch.Tensor, ...] = ()  # those tensors, kept alive so that their ids stay theirs
        self._qweight: torch.Tensor | None = None
        self.weights_refreshed = False  # set by ``refreshed_weights``: compiled code may read ``_qweight``
        self._frozen: torch.Tensor | None = None

    def _cache_key(self) -> tuple[object, ...]:
        s, z, w = self.weight_quantizer.scale, self.weight_quantizer.zero_point, self.weight
        return (id(s), s._version, id(z), z._version, id(w), w._version, self.bias_correction)

    def refresh_weight(self) -> torch.Tensor:
        """The cached dequantized weight, recomputed only when the scale, zero point or weight changed (a new
        tensor: one handed out earlier keeps its values; a compiled graph reads the attribute at every call).
        It is a plain tensor with no autograd history whatever mode the caller is in (validation runs under
        inference mode; compiled graphs take it as an input)."""
        key = self._cache_key()
        if self._qweight is None or key != self._key or self._qweight.is_inference():
            with torch.inference_mode(False), torch.no_grad():
                self._qweight = self._compute_weight()
            q = self.weight_quantizer
            self._key, self._key_refs = key, (q.scale, q.zero_point, self.weight)
        return self._qweight

    def quantized_weight(self) -> torch.Tensor:
        """Dequantized weight, from the cache. Under ``torch.compile`` the cache is read only inside
        ``refreshed_weights`` (the evaluator's compiled calls: a graph input, refreshed eagerly before each call);
        elsewhere a compiled forward computes it at every call (an opaque op, ``evolq_pl.quant.exact``), since a
        Python-side key would make dynamo guard on it and recompile after every scale change."""
        if torch.is_grad_enabled() and self.weight.requires_grad:
            return self._compute_weight()
        if torch.compiler.is_compiling():
            return self._qweight if self.weights_refreshed and self._qweight is not None else self._compute_weight()
        return self.refresh_weight()

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


@contextmanager
def refreshed_weights(model: nn.Module) -> Iterator[None]:
    """Every quantized weight of ``model`` brought up to date eagerly; compiled forwards inside read the cached
    weights as graph inputs instead of fake-quantizing each weight at every call. Nests; a failing refresh sets
    no flag."""
    layers = [m for m in model.modules() if isinstance(m, _QWeight) and m.weight_quantizer.enabled
              and not m.weight_quantizer.calibrating and m._frozen is None]
    for m in layers:
        m.refresh_weight()
    saved = [m.weights_refreshed for m in layers]
    for m in layers:
        m.weights_refreshed = True
    try:
        yield
    finally:
        for m, flag in zip(layers, saved):
            m.weights_refreshed = flag


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
        return exact_linear(x, self.effective_weight(), self.bias)


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
        if self.padding_mode != "zeros" or isinstance(self.padding, str):
            return self._conv_forward(x, self.effective_weight(), self.bias)
        return exact_conv2d(x, self.effective_weight(), self.bias, list(self.stride), list(self.padding),
                            list(self.dilation), self.groups)
