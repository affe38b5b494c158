"""Public model API: quantize a timm model, report its quantization points, expose its stages."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from torch import nn

from evolq_pl.errors import EvolQError
from evolq_pl.layers import QConv2d, QLayerNorm, QLinear, QSoftmax
from evolq_pl.models import levit as _levit  # noqa: F401  (registers converters)
from evolq_pl.models import swin as _swin  # noqa: F401
from evolq_pl.models import vit as _vit  # noqa: F401
from evolq_pl.models.convert import CONVERTERS, PREPARERS, swap_modules
from evolq_pl.models.factory import create_float_model
from evolq_pl.quant.config import QuantConfig
from evolq_pl.quant.quantizer import UniformQuantizer


def quantize_model(model: nn.Module, cfg: QuantConfig | None = None) -> nn.Module:
    """Convert a float timm ViT/DeiT/LeViT into its fully quantized form, in place; returns it in eval mode.

    The result must be calibrated (``evolq_pl.calibrate``) before it is run with quantization on.
    ``cfg.input_quant`` None = the reference's choice for the model (``default_input_quant``).
    """
    cfg = cfg or QuantConfig()
    roots = {t for t in CONVERTERS if hasattr(t, "forward_features")}  # whole timm models, not layers
    if type(model) not in roots:
        supported = sorted(t.__name__ for t in roots)
        raise EvolQError(f"cannot quantize a {type(model).__name__}; supported model classes: {', '.join(supported)}")
    if cfg.input_quant is None:
        cfg = replace(cfg, input_quant=default_input_quant(model))
    prepare = PREPARERS.get(type(model))
    if prepare is not None:
        model = prepare(model)
    model = swap_modules(model.eval(), cfg)
    model.quant_config = cfg
    return model


def default_input_quant(model: nn.Module) -> bool:
    """DeiT and Swin quantize their input image, ViT does not (reference §4.1); LeViT never does (§4.2). The
    timm architecture name tells DeiT from ViT (both are timm ``VisionTransformer``s)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return str(cfg.get("architecture", "")).startswith(("deit", "swin"))


def create_quant_model(name: str, cfg: QuantConfig | None = None, pretrained: bool = False,
                       checkpoint_path: str | None = None, checkpoint_sha256: str | None = None,
                       **timm_kwargs: Any) -> nn.Module:
    """Create a supported timm model (optionally with weights, checked against ``checkpoint_sha256``) and quantize it."""
    model = create_float_model(name, pretrained=pretrained, checkpoint_path=checkpoint_path,
                               checkpoint_sha256=checkpoint_sha256, **timm_kwargs)
    return quantize_model(model, cfg)


@dataclass
class QuantPoint:
    name: str
    kind: str
    bit_type: str
    granularity: str
    observer: str
    calibrated: bool


def _point(name: str, mod: nn.Module) -> QuantPoint | None:
    if isinstance(mod, UniformQuantizer):
        kind = "weight" if mod.is_weight else getattr(mod, "kind", "softmax" if name.endswith("softmax.quantizer") else "act")
        gran = "per-channel" if mod.per_channel else "per-tensor"
        return QuantPoint(name, kind, mod.bit_type.name, gran, mod.observer_name, mod.calibrated)
    if isinstance(mod, QLayerNorm):
        return QuantPoint(name, "int-layernorm" if mod.int_mode else "layernorm(float)", "-", "-", "-", True)
    if isinstance(mod, QSoftmax) and mod.lis:
        return QuantPoint(name, "log-int-softmax", f"uint{mod.lis_bits}", "per-tensor", "-", True)
    return None


def quant_report(model: nn.Module) -> list[QuantPoint]:
    """One row per quantization point, in module order."""
    return [p for n, m in model.named_modules() if (p := _point(n, m)) is not None]


def format_report(rows: list[QuantPoint]) -> str:
    """The report as an aligned text table."""
    header = ("module", "kind", "bits", "granularity", "observer", "calibrated")
    table = [header] + [(r.name, r.kind, r.bit_type, r.granularity, r.observer, "yes" if r.calibrated else "no")
                        for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in table)


FLOAT_TYPES = (nn.Linear, nn.Conv2d, nn.LayerNorm)


def unquantized_layers(model: nn.Module) -> list[str]:
    """Names of Linear/Conv2d/LayerNorm modules left in float (empty for a fully quantized model)."""
    quantized = (QLinear, QConv2d, QLayerNorm)
    return [n for n, m in model.named_modules() if isinstance(m, FLOAT_TYPES) and not isinstance(m, quantized)]
