"""Search units (reference §6.2–6.3): the attention modules, each with a flat vector of searchable scales."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from evolq_pl.errors import EvolQError
from evolq_pl.layers import QConv2d, QLinear
from evolq_pl.layers.act import QAct
from evolq_pl.quant.modes import QuantSwitch, switches
from evolq_pl.quant.quantizer import UniformQuantizer

# residual-unit type → attribute holding its attention module (registered by each model family)
UNIT_ATTR: dict[type, str] = {}
# quantized model type → attribute holding its embedding (patch embed / conv stem), run by stage 0
EMBED_ATTR: dict[type, str] = {}


def register_unit(cls: type, attention_attr: str) -> None:
    UNIT_ATTR[cls] = attention_attr


def register_embed(cls: type, embed_attr: str) -> None:
    EMBED_ATTR[cls] = embed_attr


@dataclass
class SearchUnit:
    """One attention module (or, as an option, the embedding) and the quantizer scales searched for it.

    Attributes:
        name: dotted name of the attention module (or embedding).
        stage_index: index in ``model.stage_fns()`` of the residual unit that contains it (0 for the
            embedding); a forward from this stage on (given the cached input) equals the full forward.
        quantizers: the quantizers whose ``scale`` is searched; zero points stay fixed.
        bits: weight bit width of the unit's projections (sets the mutation range).
    """

    name: str
    stage_index: int
    quantizers: list[UniformQuantizer] = field(repr=False)
    bits: int

    @property
    def numel(self) -> int:
        return sum(q.scale.numel() for q in self.quantizers)

    def get(self) -> torch.Tensor:
        """Flat copy of all searched scales (concatenated in module order)."""
        return torch.cat([q.scale.reshape(-1) for q in self.quantizers]).clone()

    def set(self, flat: torch.Tensor) -> None:
        """Write a flat vector back (in place); exact inverse of ``get``."""
        if flat.numel() != self.numel:
            raise EvolQError(f"unit {self.name}: got {flat.numel()} scales, expected {self.numel}")
        for q, part in zip(self.quantizers, flat.split([q.scale.numel() for q in self.quantizers])):
            q.set_scale(part.reshape(q.scale.shape))


def _weight_quantizers(mod: nn.Module, kinds: tuple[type, ...] = (QLinear,)) -> list[UniformQuantizer]:
    return [m.weight_quantizer for m in mod.modules() if isinstance(m, kinds)]


def _act_quantizers(mod: nn.Module) -> list[UniformQuantizer]:
    """Per-tensor activation quantizers (incl. softmax); PTF grids keep their power-of-two structure."""
    return [m for m in mod.modules()
            if isinstance(m, UniformQuantizer) and not m.is_weight and not (isinstance(m, QAct) and m.kind == "ptf")]


def _embed_unit(model: nn.Module) -> list[SearchUnit]:
    """The patch embedding / conv stem's weight scales as one unit run from stage 0 (the image)."""
    attr = EMBED_ATTR.get(type(model))
    quants = _weight_quantizers(getattr(model, attr), (QLinear, QConv2d)) if attr else []
    return [SearchUnit(attr, 0, quants, min(q.bit_type.bits for q in quants))] if quants else []


def search_units(model: nn.Module, include_mlp: bool = False, include_acts: bool = False,
                 include_embed: bool = False) -> list[SearchUnit]:
    """Attention units in forward order (the search visits them reversed).

    Default = the paper: the weight scales of the QLinears inside each attention module. Options beyond
    the paper: ``include_mlp`` adds the residual unit's MLP weight scales, ``include_acts`` its
    per-tensor activation scales, ``include_embed`` a first unit with the patch embedding / conv stem's
    weight scales.
    """
    if not hasattr(model, "stage_fns"):
        raise TypeError(f"{type(model).__name__} is not a quantized model (use quantize_model first)")
    names = {id(m): n for n, m in model.named_modules()}
    units = _embed_unit(model) if include_embed else []
    for index, stage in enumerate(model.stage_fns()):
        attr = UNIT_ATTR.get(type(stage))
        if attr is None:
            continue
        attn = getattr(stage, attr)
        quants = _weight_quantizers(attn)
        if include_mlp:
            quants += _weight_quantizers(stage.mlp)
        if include_acts:
            quants += _act_quantizers(stage)
        if not quants:
            continue  # attention excluded from quantization
        bits = min(q.bit_type.bits for q in _weight_quantizers(attn) or quants)
        units.append(SearchUnit(names[id(attn)], index, quants, bits))
    return units


def quantizer_groups(model: nn.Module) -> dict[str, list[QuantSwitch]]:
    """Every quantization switch of ``model`` in five disjoint groups, to split the error between them.

    ``searched``: the scales the paper's search moves (attention weights); ``mlp`` / ``embed``: the MLP
    and the patch-embed / stem weights that ``include_mlp`` / ``include_embed`` add to the search;
    ``other_weights``: every other weight quantizer (the head); ``activations``: activation, softmax and
    integer-LayerNorm switches.
    """
    searched = [q for unit in search_units(model) for q in unit.quantizers]
    seen = {id(q) for q in searched}
    mlp = [q for unit in search_units(model, include_mlp=True) for q in unit.quantizers if id(q) not in seen]
    seen |= {id(q) for q in mlp}
    embed = [q for unit in _embed_unit(model) for q in unit.quantizers]
    seen |= {id(q) for q in embed}
    everything = switches(model)
    weights = [m for m in everything if isinstance(m, UniformQuantizer) and m.is_weight and id(m) not in seen]
    acts = [m for m in everything if not (isinstance(m, UniformQuantizer) and m.is_weight)]
    return {"searched": searched, "mlp": mlp, "embed": embed, "other_weights": weights, "activations": acts}
