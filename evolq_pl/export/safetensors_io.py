"""safetensors export: integer weights (≤ 4 bits packed two per byte, 5–8 bits one per byte), per-channel
scales / zero points / bias-correction statistics, every activation quantizer's parameters (PTF factors
included) and the metadata to rebuild the model. ``load_safetensors`` rebuilds a model with identical logits.

Zero points are read, all of them. An activation quantizer's zero point is part of its grid (changing one
changes the logits). A weight layer's (``<layer>.qzero``, stored as z − lower in uint8) gives the dequantized
weights ŵ = (q − z)·s. With bias correction (the default) each output channel of ŵ is then given the stored
mean and std (``bc_mean``, ``bc_std``), which cancels any per-channel offset (q − z')·s − (q − z)·s = (z − z')·s:
the quantized model's logits do not depend on the weight zero points, and the tests pin that. They are stored
all the same because they still define (1) the weights without bias correction, (2) the rebuilt model's float
stand-in weights (q − z)·s, which are what runs with quantization turned off (``quant_disabled``), and (3) the
codes of a re-export of the rebuilt model (round(ŵ/s + z) = q). Loading checks each (``load_safetensors``).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from evolq_pl.export.output import ExportError, check_output
from evolq_pl.io import atomic_path
from evolq_pl.layers import QConv2d, QLinear
from evolq_pl.quant.config import QuantConfig
from evolq_pl.quant.functional import bias_correct_to
from evolq_pl.quant.quantizer import quantizers

FORMAT = "evolq_pl/2"  # /2: content hash in the metadata


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


def _weight_info(layer: QLinear | QConv2d) -> dict[str, Any]:
    """A weight layer as the metadata describes it (and loading checks it against the model)."""
    wq = layer.weight_quantizer
    return {"bits": wq.bit_type.bits, "lower": wq.bit_type.lower, "shape": list(layer.weight.shape),
            "bias_correction": layer.bias_correction}


def _stored_as_codes(layers: dict[str, QLinear | QConv2d]) -> set[str]:
    """The state-dict entries a weight layer stores as packed codes and uint8 zero points instead."""
    return {f"{n}.{k}" for n in layers for k in ("weight", "weight_quantizer.zero_point")}


class _Frozen:
    """A rebuilt weight layer multiplies by its stored dequantized (bias-corrected) ``frozen_weight``: the float
    weights are not in the file, their statistics are (``frozen_mean``, ``frozen_std``)."""

    frozen_weight: torch.Tensor
    frozen_mean: torch.Tensor  # (O, 1), as frozen_std
    frozen_std: torch.Tensor

    def quantized_weight(self) -> torch.Tensor:
        return self.frozen_weight

    def bias_target(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.frozen_mean, self.frozen_std


FrozenQLinear = type("FrozenQLinear", (_Frozen, QLinear), {})  # module-level names: they pickle
FrozenQConv2d = type("FrozenQConv2d", (_Frozen, QConv2d), {})
FROZEN: dict[type, type] = {QLinear: FrozenQLinear, QConv2d: FrozenQConv2d}


def export_safetensors(model: nn.Module, path: str | Path, model_name: str, model_kwargs: dict[str, Any],
                       overwrite: bool = False) -> Path:
    """Write ``model`` (quantized, calibrated) to ``path``; refuses an uncalibrated one, an existing file too."""
    from safetensors.torch import save

    path = Path(path)
    check_output(path, overwrite)
    uncalibrated = [n for n, q in quantizers(model).items() if not q.calibrated]
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
                mu, sd = layer.bias_target()  # a rebuilt layer: the stored ones
                tensors[f"{name}.bc_mean"], tensors[f"{name}.bc_std"] = mu.contiguous(), sd.contiguous()
            weights[name] = _weight_info(layer)
        skip = _stored_as_codes(layers)
        for key, value in model.state_dict().items():
            if key not in skip:
                tensors[key] = value.detach().contiguous().clone()
    meta = {"format": FORMAT, "model_name": model_name, "model_kwargs": json.dumps(model_kwargs),
            "quant_config": json.dumps(asdict(model.quant_config)), "weights": json.dumps(weights)}
    meta["content_sha256"] = content_hash(tensors, meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = save(tensors, metadata=meta)  # written by Python: an OS error is an OSError (save_file's is not)
    with atomic_path(path) as tmp:  # a failed write leaves no partial file and an existing one as it was
        tmp.write_bytes(data)
    return path


def content_hash(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> str:
    """sha256 over every tensor (name, dtype, shape, bytes) and every metadata field but the hash itself."""
    h = hashlib.sha256()
    for key in sorted(meta):
        if key != "content_sha256":
            h.update(f"{key}={meta[key]}\n".encode())
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _read_header(path: Path) -> tuple[dict[str, Any], dict[str, list[int]]]:
    """Metadata (parsed) and tensor shapes, without reading any tensor."""
    from safetensors import safe_open

    if not path.is_file():
        raise ExportError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
            shapes = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as err:  # not a safetensors file, a truncated header, …
        raise ExportError(f"{path} is not a readable safetensors file ({type(err).__name__}: {err})") from None
    if raw.get("format") != FORMAT:
        raise ExportError(f"{path} is not an {FORMAT} export (format={raw.get('format')!r}); re-export it")
    meta: dict[str, Any] = {"raw": raw, "model_name": raw.get("model_name")}
    for key in ("model_kwargs", "quant_config", "weights"):
        try:
            meta[key] = json.loads(raw[key])
        except (KeyError, TypeError, ValueError) as err:
            raise ExportError(f"{path}: metadata field {key!r} is missing or not JSON ({err})") from None
        if not isinstance(meta[key], dict):
            raise ExportError(f"{path}: metadata field {key!r} is a {type(meta[key]).__name__}, expected an object")
    return meta, shapes


# create_quant_model arguments that are not model sizes: an export's metadata may not set them
NOT_SIZES = ("pretrained", "checkpoint_path", "checkpoint_sha256", "pretrained_cfg", "pretrained_cfg_overlay")


def _expected_shapes(meta: dict[str, Any], path: Path) -> dict[str, list[int] | None]:
    """Every tensor the model named in the metadata needs in the file, with its shape (None: a calibrated size,
    checked by bound), built on the meta device (nothing is allocated for a model the file does not hold)."""
    from evolq_pl.models import create_quant_model
    from evolq_pl.models.factory import check_model_name

    bad = [k for k in meta["model_kwargs"] if k in NOT_SIZES]
    if bad:
        raise ExportError(f"{path}: metadata model_kwargs may only hold model sizes, not {bad}")
    try:
        check_model_name(str(meta["model_name"]))
        cfg = QuantConfig(**meta["quant_config"])
        with torch.device("meta"):
            model = create_quant_model(meta["model_name"], cfg, **meta["model_kwargs"])
    except Exception as err:  # unknown keys, impossible sizes (timm asserts), …
        raise ExportError(f"{path}: metadata does not describe a supported model "
                          f"({type(err).__name__}: {err})") from None
    layers = _weight_layers(model)
    skip, expected = _stored_as_codes(layers), {}  # (those: below)
    for key, value in model.state_dict().items():
        if key not in skip:
            expected[key] = None if key.rpartition(".")[2] in ("scale", "zero_point") else list(value.shape)
    for name, layer in layers.items():
        bits, numel, rows = layer.weight_quantizer.bit_type.bits, layer.weight.numel(), layer.weight.shape[0]
        expected[f"{name}.qweight"] = [numel if bits > 4 else (numel + 1) // 2]
        expected[f"{name}.qzero"] = [rows]
        if layer.bias_correction:
            expected[f"{name}.bc_mean"] = expected[f"{name}.bc_std"] = [rows, 1]  # channel_stats: (C, 1)
    return expected


def _check_layout(path: Path, meta: dict[str, Any], shapes: dict[str, list[int]]) -> None:
    """The file holds exactly the tensors the model needs, each of its shape (calibrated sizes bounded)."""
    expected = _expected_shapes(meta, path)
    missing, extra = sorted(set(expected) - set(shapes)), sorted(set(shapes) - set(expected))
    if missing or extra:
        raise ExportError(f"{path} does not hold the tensors of the model in its metadata ({meta['model_name']}, "
                          f"{meta['model_kwargs']}): missing {missing[:3]}, unexpected {extra[:3]}")
    bound = max(max(s) for s in expected.values() if s)
    for key, shape in shapes.items():
        want = expected[key]
        if (want is not None and shape != want) or (want is None and (len(shape) != 1 or shape[0] > bound)):
            raise ExportError(f"{path}: tensor {key} has shape {shape}, the model in its metadata "
                              f"({meta['model_name']}, {meta['model_kwargs']}) needs "
                              f"{want if want is not None else f'one dimension of at most {bound}'}")


def _refuse_off_grid(path: Path, key: str, values: torch.Tensor, lower: int, upper: int, what: str) -> None:
    """Every value of ``values`` an integer in lower..upper, or an ``ExportError`` naming tensor ``key``."""
    v = values.double()
    bad = (v != v.round()) | (v < lower) | (v > upper)
    if bad.any():
        raise ExportError(f"{path}: tensor {key} holds {what} {v[bad][0].item():g}; the quantizer's grid allows "
                          f"only integers {lower}..{upper}")


def _check_values(path: Path, model: nn.Module, tensors: dict[str, torch.Tensor], weights: dict[str, Any]) -> None:
    """Every quantizer's scale finite and > 0, its zero points integers on its grid, every weight code on its
    grid (the content hash is a checksum, not a guard: an edited file with a recomputed hash reaches here)."""
    layers = _weight_layers(model)
    if set(weights) != set(layers):
        raise ExportError(f"{path}: metadata weights names {sorted(set(weights) ^ set(layers))[:3]}, which the "
                          f"model in its metadata does not match")
    for name, q in quantizers(model).items():
        lo, hi, scale = q.bit_type.lower, q.bit_type.upper, tensors[f"{name}.scale"]
        if scale.numel() == 0 or not bool((scale > 0).all()):
            raise ExportError(f"{path}: tensor {name}.scale holds "
                              f"{f'the scale {scale.min().item():g}' if scale.numel() else 'no scale'}; "
                              "every scale must be finite and > 0")
        owner = name.rpartition(".")[0]
        zkey, offset = (f"{owner}.qzero", lo) if q.is_weight and owner in layers else (f"{name}.zero_point", 0)
        if tensors[zkey].shape != scale.shape:
            raise ExportError(f"{path}: tensor {zkey} has shape {list(tensors[zkey].shape)}, its scale "
                              f"{list(scale.shape)}")
        _refuse_off_grid(path, zkey, tensors[zkey], lo - offset, hi - offset, "the zero point")
    for name, info in weights.items():
        want = _weight_info(layers[name])
        if not isinstance(info, dict) or any(info.get(k) != v for k, v in want.items()):
            raise ExportError(f"{path}: metadata weights[{name!r}] is {info}; the model in its metadata needs {want}")
        wrong = next((k for k in (f"{name}.qweight", f"{name}.qzero") if tensors[k].dtype != torch.uint8), None)
        if wrong is not None:
            raise ExportError(f"{path}: tensor {wrong} is {tensors[wrong].dtype}, not torch.uint8")
        codes = unpack(tensors[f"{name}.qweight"], info["bits"], layers[name].weight.numel())
        _refuse_off_grid(path, f"{name}.qweight", codes, 0, 2 ** info["bits"] - 1, "the code")  # (bits: checked)


def load_safetensors(path: str | Path) -> nn.Module:
    """Rebuild the fake-quant model from an export alone (no float weights needed): identical logits.

    Checked before anything large is allocated: the format, the metadata (a supported model, sizes that match
    every tensor in the file); then every tensor is finite and the content hash written at export matches
    (a flipped byte or an edited ``quant_config`` is refused); then the values: every scale > 0, every zero
    point and weight code an integer on its quantizer's grid, the metadata's weight layers as the model has
    them. Every failure is an ``ExportError``.
    """
    from safetensors import safe_open

    from evolq_pl.models import create_quant_model

    path = Path(path)
    meta, shapes = _read_header(path)
    _check_layout(path, meta, shapes)
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    bad = next((k for k, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()), None)
    if bad is not None:
        raise ExportError(f"{path}: tensor {bad} holds NaN or infinite values")
    if content_hash(tensors, meta["raw"]) != meta["raw"].get("content_sha256"):
        raise ExportError(f"{path}: content hash does not match the one written at export (the file was "
                          "changed or damaged after export)")
    model = create_quant_model(meta["model_name"], QuantConfig(**meta["quant_config"]), **meta["model_kwargs"])
    weights = meta["weights"]
    _check_values(path, model, tensors, weights)
    state = {k: v for k, v in tensors.items() if not k.endswith((".qweight", ".qzero", ".bc_mean", ".bc_std"))}
    for name, info in weights.items():
        state[f"{name}.weight_quantizer.zero_point"] = tensors[f"{name}.qzero"].float() + info["lower"]
    model.load_state_dict(state, strict=False)  # all but the weights: the checks above made the keys exact
    with torch.no_grad():
        for name, layer in _weight_layers(model).items():
            _restore_weight(layer, name, tensors, weights[name])
    return model.eval()


def _restore_weight(layer: QLinear | QConv2d, name: str, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    """Dequantize a layer's stored codes into its float stand-in weight (quantization off) and freeze it on them,
    bias-corrected with the stored statistics (quantization on)."""
    codes = unpack(tensors[f"{name}.qweight"], info["bits"], layer.weight.numel()).float().view_as(layer.weight)
    w_hat = layer.weight_quantizer.dequantize(codes + info["lower"])
    layer.weight.copy_(w_hat)
    if info["bias_correction"]:
        w_hat = bias_correct_to(w_hat, tensors[f"{name}.bc_mean"], tensors[f"{name}.bc_std"])
        for stat in ("mean", "std"):  # buffers: they move with the model
            layer.register_buffer(f"frozen_{stat}", tensors[f"{name}.bc_{stat}"], persistent=False)
    layer.__class__ = FROZEN[type(layer)]
    layer.register_buffer("frozen_weight", w_hat, persistent=False)
