"""What a search checkpoint holds besides the model's scales, and whether it belongs to this run: the same model,
sizes and quantization (and, for a resumed search, the same search and selection), and — for a lean checkpoint —
the same float weights. A mismatch is refused naming each field and both values. No Lightning here."""
from __future__ import annotations

import hashlib
from typing import Any

import torch

from evolq_pl.errors import EvolQError


class CheckpointMismatchError(EvolQError):
    pass


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out


def check_same(what: str, stored: dict[str, Any], current: dict[str, Any]) -> None:
    stored, current = _flatten(stored), _flatten(current)
    diff = {k: (stored.get(k), current.get(k)) for k in set(stored) | set(current) if stored.get(k) != current.get(k)}
    if diff:
        details = "; ".join(f"{k}: checkpoint={a!r}, config={b!r}" for k, (a, b) in sorted(diff.items()))
        raise CheckpointMismatchError(f"{what} does not match this run ({details})")


def checked_state(checkpoint: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's ``evolq`` entry, checked against this run's model, sizes and quantization (``meta``); a
    resumed search's settings are checked by ``SearchRun.load_state_dict``."""
    state = checkpoint.get("evolq")
    if state is None or "driver" not in state:
        raise CheckpointMismatchError("ckpt_path: not an evolq_pl search checkpoint of this version "
                                      "(no 'evolq' driver state)")
    check_same("checkpoint", state["meta"], meta)  # what the weights and scales mean
    return state


def _describe(source: dict[str, str] | None) -> str:
    if source is None:
        return "timm's random initialisation (no pretrained tag, no checkpoint_path)"
    return ", ".join(f"{k} {v}" for k, v in source.items())


def weights_sha256(weights: dict[str, torch.Tensor]) -> str:
    """sha256 of named tensors' bytes (names included, in name order): what a lean checkpoint left out."""
    h = hashlib.sha256()
    for name in sorted(weights):
        h.update(name.encode() + weights[name].detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class FloatWeights:
    """The float parameters of ``model`` (state-dict names under ``prefix``), which a search never changes: a
    lean checkpoint leaves them out, named by ``source`` (pretrained tag or checkpoint file sha256) and their
    sha256; a restore puts them back from the model the config built, after checking both. ``source`` None (a
    random initialisation nothing names) or ``lean`` False (``checkpoint_weights: full``): they stay in."""

    def __init__(self, model: torch.nn.Module, source: dict[str, str] | None, lean: bool = True,
                 prefix: str = "model.") -> None:
        self.model, self.source, self.lean, self.prefix = model, source, lean, prefix
        self._digest: str | None = None  # computed once, at the first lean save

    def weights(self) -> dict[str, torch.Tensor]:
        return {f"{self.prefix}{n}": p.detach() for n, p in self.model.named_parameters(remove_duplicate=False)}

    def digest(self) -> str:
        if self._digest is None:
            self._digest = weights_sha256(self.weights())
        return self._digest

    def drop(self, checkpoint: dict[str, Any]) -> None:
        """Make ``checkpoint`` lean (where they are named)."""
        if self.source is None or not self.lean:
            return
        state = checkpoint["state_dict"]
        for name in self.weights():
            state.pop(name, None)
        checkpoint["evolq"]["float_weights"] = {**self.source, "weights_sha256": self.digest()}

    def fill(self, checkpoint: dict[str, Any]) -> None:
        """Put back what a lean ``checkpoint`` left out, after checking that this config names the same source
        and builds the same bytes; a self-contained checkpoint is left as it is."""
        stored = dict(checkpoint.get("evolq", {}).get("float_weights") or {})
        if not stored:
            return
        digest = stored.pop("weights_sha256", None)
        if stored != self.source:
            raise CheckpointMismatchError(
                f"the checkpoint was searched from the float weights of {_describe(stored)}; this config builds "
                f"{_describe(self.source)}: give the same model.init_args.pretrained / checkpoint_path as the search")
        weights = self.weights()
        if digest is not None and digest != weights_sha256(weights):
            raise CheckpointMismatchError(
                f"the float weights this config builds from {_describe(self.source)} differ from those the search "
                "started from (their sha256): another hub revision, or layers timm initialises at random (a "
                "classifier head of another num_classes); use a self-contained checkpoint (checkpoint_weights: full)")
        for name, tensor in weights.items():
            checkpoint["state_dict"].setdefault(name, tensor)
