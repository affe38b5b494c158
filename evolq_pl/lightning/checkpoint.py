"""Whether a checkpoint belongs to this run: the same model, sizes and quantization (and, for a resumed
search, the same search and selection). A mismatch is refused naming each field and both values."""
from __future__ import annotations

import hashlib
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.core.saving import pl_load
from lightning.pytorch.utilities import rank_zero_warn

from evolq_pl.errors import EvolQError
from evolq_pl.io import ensure_writable_dir
from evolq_pl.models.factory import CheckpointError
from evolq_pl.search import SearchConfig


class CheckpointMismatchError(EvolQError):
    pass


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A Lightning checkpoint as plain tensors and containers: never unpickles arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"ckpt_path={str(path)!r}: no such file")
    try:
        checkpoint = pl_load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a pickle payload, a truncated or foreign file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"ckpt_path={str(path)!r}: not a weights-only checkpoint, refused ({first})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"ckpt_path={str(path)!r}: not a Lightning checkpoint (no state_dict)")
    return checkpoint


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


def checked_state(checkpoint: dict[str, Any], meta: dict[str, Any],
                  search: dict[str, Any] | None = None) -> dict[str, Any]:
    """The checkpoint's ``evolq`` entry, checked against this run: the same model, sizes and quantization
    (``meta``) and, for a resumed search, the same search settings and selection (``search``: ``search_config``, a
    ``SearchConfig``, and ``selection``; None outside ``fit``)."""
    state = checkpoint.get("evolq")
    if state is None or "driver" not in state:
        raise CheckpointMismatchError("ckpt_path: not an evolq_pl search checkpoint of this version "
                                      "(no 'evolq' driver state)")
    check_same("checkpoint", state["meta"], meta)  # what the weights and scales mean
    if search is not None:
        check_same("checkpoint search config",
                   {**SearchConfig.identity_of(state["search_config"]), "selection": state["selection"]},
                   {**search["search_config"].identity(), "selection": search["selection"]})
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


class SearchCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint with a search's defaults: after every search step, one file (``last.ckpt``,
    replaced each step, never ``last-v1.ckpt``: it always names this run's newest step). Its writes are
    charged to the module's ``checkpoints`` phase. Any ModelCheckpoint argument may be given.

    Its folder is checked writable at setup, before calibration. A write that fails later (a full disk, a
    folder made read-only) does not end the search: it is warned once with the path and retried at the next
    step; ``failed`` holds the last failure (None once a write succeeds again), which results.json lists as
    ``missing["checkpoint"]`` (read through ``checkpoint_failure``)."""

    def __init__(self, every_n_train_steps: int = 1, save_last: bool = True, save_top_k: int = 0,
                 enable_version_counter: bool = False, **kwargs: Any) -> None:
        super().__init__(every_n_train_steps=every_n_train_steps, save_last=save_last, save_top_k=save_top_k,
                         enable_version_counter=enable_version_counter, **kwargs)
        self.failed: str | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit" and self.dirpath is not None and _local(self.dirpath):
            ensure_writable_dir(Path(self.dirpath), "SearchCheckpoint dirpath")

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        try:
            super()._save_checkpoint(trainer, filepath)
        except OSError as err:
            trainer.strategy.barrier("Trainer.save_checkpoint")  # the one the failed write skipped: other ranks wait
            if self.failed is None:
                rank_zero_warn(f"cannot write checkpoint {filepath}: {err.strerror or err}; the search goes on "
                               "and retries at the next step")
            self.failed = f"cannot write checkpoint {filepath}: {err.strerror or err}"
        else:
            self.failed = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        with _charged(pl_module):
            super().on_train_batch_end(trainer, pl_module, *args)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        with _charged(pl_module):
            super().on_train_epoch_end(trainer, pl_module)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        with _charged(pl_module):
            super().on_exception(trainer, pl_module, exception)


def _local(path: str | Path) -> bool:
    """A path on the local file system (not a remote fsspec URL such as s3://)."""
    protocol = get_filesystem(path).protocol
    return "file" in (protocol if isinstance(protocol, tuple) else (protocol,))


def checkpoint_failure(trainer: L.Trainer) -> str | None:
    """The last failed write of a SearchCheckpoint of ``trainer`` that no later write made good, if any."""
    return next((cb.failed for cb in trainer.checkpoint_callbacks if getattr(cb, "failed", None)), None)


def _charged(pl_module: L.LightningModule) -> AbstractContextManager:
    phases = getattr(pl_module, "phases", None)
    return phases("checkpoints") if phases is not None else nullcontext()
