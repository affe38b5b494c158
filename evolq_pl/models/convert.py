"""Module swap: converters registered per (exact) module type, applied by one recursive function."""
from __future__ import annotations

from fnmatch import fnmatch
from typing import Callable, Iterable

from torch import nn

from evolq_pl.layers import QConv2d, QLayerNorm, QLinear, bind
from evolq_pl.quant.config import QuantConfig

Converter = Callable[[nn.Module, QuantConfig], nn.Module]
CONVERTERS: dict[type, Converter] = {}
PREPARERS: dict[type, Callable[[nn.Module], nn.Module]] = {}


def register_converter(*types: type) -> Callable[[Converter], Converter]:
    def wrap(fn: Converter) -> Converter:
        for t in types:
            CONVERTERS[t] = fn
        return fn
    return wrap


def register_preparer(*types: type) -> Callable:
    """A whole-model rewrite run before conversion (e.g. LeViT's BatchNorm folding)."""
    def wrap(fn: Callable[[nn.Module], nn.Module]) -> Callable[[nn.Module], nn.Module]:
        for t in types:
            PREPARERS[t] = fn
        return fn
    return wrap


register_converter(nn.Linear)(QLinear.from_float)
register_converter(nn.Conv2d)(QConv2d.from_float)
register_converter(nn.LayerNorm)(QLayerNorm.from_float)


def swap_class(mod: nn.Module, cls: type) -> nn.Module:
    """Turn a float container module into its quantized subclass in place (its children are kept)."""
    if not issubclass(cls, type(mod)):
        raise TypeError(f"{cls.__name__} must subclass {type(mod).__name__}")
    mod.__class__ = cls
    return mod


def register_swap(float_type: type, quant_type: type, **points: Callable[[QuantConfig], nn.Module]) -> None:
    """Register the common converter: turn ``float_type`` into its subclass ``quant_type`` in place and add
    the named quantization points (e.g. ``qact1=act``)."""
    def convert(mod: nn.Module, cfg: QuantConfig) -> nn.Module:
        mod = swap_class(mod, quant_type)
        for name, make in points.items():
            setattr(mod, name, make(cfg))
        return mod
    register_converter(float_type)(convert)


def refuse_unsupported(variant: str, problems: dict[str, bool]) -> None:
    """Raise naming every problem that holds (a model variant the converters do not handle)."""
    bad = [name for name, present in problems.items() if present]
    if bad:
        raise NotImplementedError(f"{variant} variant not supported: {', '.join(bad)}")


def bind_streams(first: nn.Module, units: Iterable[nn.Module], output: Callable[[nn.Module], nn.Module]) -> None:
    """Give each residual unit, in forward order, the quantizer whose grid its input lies on (``stream_in``, read
    by its integer LayerNorm): ``first`` for the first unit, then the previous unit's ``output(unit)``."""
    prev = first
    for unit in units:
        bind(unit, "stream_in", prev)
        prev = output(unit)


def _excluded(name: str, cfg: QuantConfig) -> bool:
    return any(fnmatch(name, pattern) for pattern in cfg.exclude)


def swap_modules(module: nn.Module, cfg: QuantConfig, prefix: str = "") -> nn.Module:
    """Convert children bottom-up, then ``module`` itself, wherever a converter is registered.

    Modules whose dotted name matches a ``cfg.exclude`` pattern stay float.
    """
    for name, child in list(module.named_children()):
        full = f"{prefix}{name}"
        if _excluded(full, cfg):
            continue
        setattr(module, name, swap_modules(child, cfg, f"{full}."))
    fn = CONVERTERS.get(type(module))
    return fn(module, cfg) if fn is not None else module
