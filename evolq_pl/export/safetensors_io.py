"""safetensors export: integer weights (≤ 4 bits packed two per byte, 5–8 bits one per byte), per-channel
scales / zero points / bias-correction statistics, every activation quantizer's parameters (PTF factors
included) and the metadata to rebuild the model. ``load_safetensors`` rebuilds a model with identical logits."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from evolq_pl.layers import QConv2d, QLinear
from evolq_pl.quant.config import QuantConfig
from evolq_pl.quant.functional import bias_correct_to, channel_stats
from evolq_pl.quant.quantizer import UniformQuantizer

FORMAT = "evolq_pl/1"


class ExportError(ValueError):
    pass


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Unsigned codes (0 … 2^bits − 1) → uint8; two per byte (low nibble first) when bits ≤ 4."""
    flat = codes.reshape(-1).to(torch.uint8)
    if bits > 4:
        return flat
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    return flat[0::2] | (flat[1::2] << 4)


def unpack(packed: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    if bits > 4:
        return packed[:numel]
    return torch.stack([packed & 0x0F, packed >> 4], dim=1).reshape(-1)[:numel]


def _weight_layers(model: nn.Module) -> dict[str, QLinear | QConv2d]:
    return {n: m for n, m in model.named_modules() if isinstance(m, (QLinear, QConv2d))}


def export_safetensors(model: nn.Module, path: str | Path, model_name: str, model_kwargs: dict[str, Any],
                       overwrite: bool = False) -> Path:
    """Write ``model`` (quantized, calibrated) to ``path``. Refuses an uncalibrated model and an existing
    file unless ``overwrite``."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.exists() and not overwrite:
        raise ExportError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    uncalibrated = [n for n, m in model.named_modules() if isinstance(m, UniformQuantizer) and not m.calibrated]
    if uncalibrated:
        raise ExportError(f"model is not calibrated ({len(uncalibrated)} quantizers, e.g. {uncalibrated[0]})")
    layers = _weight_layers(model)
    tensors: dict[str, torch.Tensor] = {}
    weights: dict[str, Any] = {}
    with torch.no_grad():
        for name, layer in layers.items():
            wq = layer.weight_quantizer
            codes = wq.codes(layer.weight) - wq.bit_type.lower
            tensors[f"{name}.qweight"] = pack(codes, wq.bit_type.bits)
            tensors[f"{name}.qzero"] = (wq.zero_point - wq.bit_type.lower).to(torch.uint8)  # integer-valued
            if layer.bias_correction:
                mu, sd = channel_stats(layer.weight)
                tensors[f"{name}.bc_mean"], tensors[f"{name}.bc_std"] = mu.contiguous(), sd.contiguous()
            weights[name] = {"bits": wq.bit_type.bits, "lower": wq.bit_type.lower, "shape": list(layer.weight.shape),
                             "bias_correction": layer.bias_correction}
        skip = {f"{n}.{k}" for n in layers for k in ("weight", "weight_quantizer.zero_point")}
        for key, value in model.state_dict().items():
            if key not in skip:
                tensors[key] = value.detach().contiguous().clone()
    meta = {"format": FORMAT, "model_name": model_name, "model_kwargs": json.dumps(model_kwargs),
            "quant_config": json.dumps(asdict(model.quant_config)), "weights": json.dumps(weights)}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)
    return path


def load_safetensors(path: str | Path) -> nn.Module:
    """Rebuild the fake-quant model from an export alone (no float weights needed): identical logits."""
    from safetensors import safe_open

    from evolq_pl.models import create_quant_model

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            raise ExportError(f"{path} is not an {FORMAT} export (format={meta.get('format')!r})")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    cfg = QuantConfig(**json.loads(meta["quant_config"]))
    model = create_quant_model(meta["model_name"], cfg, **json.loads(meta["model_kwargs"]))
    weights = json.loads(meta["weights"])
    state = {k: v for k, v in tensors.items() if not k.endswith((".qweight", ".qzero", ".bc_mean", ".bc_std"))}
    for name, info in weights.items():
        state[f"{name}.weight_quantizer.zero_point"] = tensors[f"{name}.qzero"].float() + info["lower"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) != {f"{n}.weight" for n in weights}:
        raise ExportError(f"{path} does not match {meta['model_name']}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    layers = _weight_layers(model)
    with torch.no_grad():
        for name, info in weights.items():
            layer, wq = layers[name], layers[name].weight_quantizer
            numel = int(torch.Size(info["shape"]).numel())
            codes = unpack(tensors[f"{name}.qweight"], info["bits"], numel).float().reshape(info["shape"]) + info["lower"]
            w_hat = wq.dequantize(codes)
            layer.weight.copy_(w_hat)  # the float weights are not in the file: the grid values stand in
            if info["bias_correction"]:
                w_hat = bias_correct_to(w_hat, tensors[f"{name}.bc_mean"], tensors[f"{name}.bc_std"])
            layer.freeze(w_hat)
    return model.eval()
