"""Float timm models we support, with the paper's pretrained tags; creation and local checkpoint loading."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from evolq_pl.errors import EvolQError
from evolq_pl.models.reference import weights_file

# model name → the pretrained tag Evol-Q used (reference §8.2). timm's default ViT-B tag is another checkpoint.
PRETRAINED_TAGS: dict[str, str] = {
    "vit_base_patch16_224": "vit_base_patch16_224.augreg_in21k_ft_in1k",
    # the published code loads the AugReg L/16 ImageNet-21k (300 ep) → ImageNet-1k fine-tune at 224: this tag
    "vit_large_patch16_224": "vit_large_patch16_224.augreg_in21k_ft_in1k",
    "deit_tiny_patch16_224": "deit_tiny_patch16_224.fb_in1k",
    "deit_small_patch16_224": "deit_small_patch16_224.fb_in1k",
    "deit_base_patch16_224": "deit_base_patch16_224.fb_in1k",
    "levit_128s": "levit_128s.fb_dist_in1k",
    "levit_128": "levit_128.fb_dist_in1k",
    "levit_192": "levit_192.fb_dist_in1k",
    "levit_256": "levit_256.fb_dist_in1k",
    "levit_384": "levit_384.fb_dist_in1k",
    # the published code loads the ImageNet-1k Swin checkpoints (timm's default for S/B is the 22k → 1k fine-tune)
    "swin_tiny_patch4_window7_224": "swin_tiny_patch4_window7_224.ms_in1k",
    "swin_small_patch4_window7_224": "swin_small_patch4_window7_224.ms_in1k",
    "swin_base_patch4_window7_224": "swin_base_patch4_window7_224.ms_in1k",
}
SUPPORTED_MODELS = tuple(PRETRAINED_TAGS)


class UnknownModelError(EvolQError):
    pass


class CheckpointError(EvolQError, RuntimeError):
    pass


class ModelKwargsError(EvolQError):
    """timm cannot build the model with the given size overrides (``model_kwargs``)."""


def check_model_name(name: str) -> str:
    """Return ``name`` if supported (a tag suffix such as ``.fb_in1k`` is allowed), else raise listing the choices."""
    if name.split(".")[0] not in PRETRAINED_TAGS:
        raise UnknownModelError(f"unknown model {name!r}; supported: {', '.join(SUPPORTED_MODELS)}")
    return name


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _listed(names: list[str], limit: int = 3) -> str:
    return ", ".join(names[:limit]) + (", …" if len(names) > limit else "")


def state_mismatch(model: nn.Module, state: dict[str, Any]) -> str | None:
    """How ``state``'s names and shapes differ from ``model``'s state dict, in one line (a few names of each kind
    and the counts); None when they agree."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and tuple(getattr(state[k], "shape", ())) != tuple(own[k].shape)]
    parts = [f"{len(v)} {what} ({_listed(v)})" for what, v in (
        ("missing", missing), ("unexpected", unexpected), ("of another shape, checkpoint vs model", shapes)) if v]
    return "; ".join(parts) or None


def load_checkpoint_file(model: nn.Module, path: str | Path, sha256: str | None = None,
                         model_kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Load a float state dict (plain, or under ``model``/``state_dict`` keys, Lightning prefixes stripped) from
    a file, or a shipped reference model's (``reference:<name>``). A mismatch is one line naming a few tensors
    of each kind and the ``model_kwargs`` the model was built with (when given)."""
    path = weights_file(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint_path={str(path)!r} does not exist")
    if sha256 is not None and (actual := sha256_file(path)) != sha256:
        raise CheckpointError(f"checkpoint {path} has sha256 {actual}, expected {sha256}: corrupt or replaced file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err}") from err
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    state = {k.removeprefix("model."): v for k, v in state.items()}
    built = "" if model_kwargs is None else f" built with model_kwargs={model_kwargs}"
    if (diff := state_mismatch(model, state)) is not None:  # torch's message lists every tensor: 100+ lines
        raise CheckpointError(f"checkpoint {path} does not match the model{built}: {diff}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {path} does not match the model{built}: {err}") from err
    return model


def float_source(name: str, pretrained: bool = False, checkpoint_path: str | None = None,
                 checkpoint_sha256: str | None = None) -> dict[str, str] | None:
    """What identifies the float weights a model is built from: the pretrained tag, or the checkpoint file's
    sha256 (its content, wherever it lies); None for timm's random initialisation (nothing names it)."""
    if checkpoint_path:
        return {"checkpoint_sha256": checkpoint_sha256 or sha256_file(weights_file(checkpoint_path))}
    if pretrained:
        return {"pretrained": name if "." in name else PRETRAINED_TAGS[name.split(".")[0]]}
    return None


def create_float_model(name: str, pretrained: bool = False, checkpoint_path: str | None = None,
                       checkpoint_sha256: str | None = None, **timm_kwargs: Any) -> nn.Module:
    """Create one of the supported timm models in eval mode.

    Args:
        name: a supported model name (see ``SUPPORTED_MODELS``); ``pretrained`` uses the paper's tag.
        pretrained: load hub weights through timm (honours the hub cache and ``HF_HUB_OFFLINE``); ignored
            where ``checkpoint_path`` is given (a config asking for hub weights, plus a local file of them).
        checkpoint_path: a local float checkpoint instead of hub weights, or ``reference:<name>`` for a
            shipped reference model.
        checkpoint_sha256: expected sha256 of ``checkpoint_path`` (refused on mismatch).
        **timm_kwargs: size overrides, e.g. ``img_size=28, in_chans=1, num_classes=10, depth=6``; ones timm
            cannot build raise ``ModelKwargsError`` naming them and timm's reason in one line.
    """
    check_model_name(name)
    tag = name if "." in name else PRETRAINED_TAGS[name]
    pretrained = pretrained and not checkpoint_path  # the local file replaces the hub download
    try:
        model = timm.create_model(tag, pretrained=pretrained, **timm_kwargs)
    except Exception as err:  # timm's checks are asserts, divisions by zero, TypeErrors …
        if not pretrained:
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise ModelKwargsError(f"model_kwargs={timm_kwargs}: timm cannot build {tag} with them "
                                   f"({type(err).__name__}: {first})") from err
        raise CheckpointError(
            f"could not load pretrained weights {tag!r} ({type(err).__name__}: {err}). Offline? Put the weights "
            f"in the Hugging Face hub cache, or download them elsewhere and pass checkpoint_path=<file>."
        ) from err
    if checkpoint_path:
        load_checkpoint_file(model, checkpoint_path, checkpoint_sha256, timm_kwargs)
    return model.eval()
