"""Whether a checkpoint belongs to this run: the same model, sizes and quantization (and, for a resumed
search, the same search and selection). A mismatch is refused naming each field and both values."""
from __future__ import annotations

import hashlib
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterable

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.core.saving import pl_load
from lightning.pytorch.utilities import rank_zero_warn

from evolq_pl.lightning.results import ensure_writable_dir
from evolq_pl.models.factory import CheckpointError
from evolq_pl.search import SearchConfig


class CheckpointMismatchError(ValueError):
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


def drop_float_weights(checkpoint: dict[str, Any], names: Iterable[str], source: dict[str, str] | None,
                       digest: Callable[[], str]) -> None:
    """Make ``checkpoint`` lean: the float weights (which a search never changes) are left out, named by their
    source and their sha256 (``digest()``) instead. Weights that nothing names (``source`` None: a random
    initialisation, or ``checkpoint_weights: full``) stay in."""
    if source is None:
        return
    state = checkpoint["state_dict"]
    for name in names:
        state.pop(name, None)
    checkpoint["evolq"]["float_weights"] = {**source, "weights_sha256": digest()}


def fill_float_weights(checkpoint: dict[str, Any], weights: dict[str, torch.Tensor],
                       source: dict[str, str] | None) -> None:
    """Put back the float weights a lean checkpoint left out, from this module (built from the config's float
    source), after checking that the config names the same source and builds the same bytes."""
    stored = dict(checkpoint.get("evolq", {}).get("float_weights") or {})
    if not stored:  # a self-contained checkpoint
        return
    digest = stored.pop("weights_sha256", None)
    if stored != source:
        raise CheckpointMismatchError(
            f"the checkpoint was searched from the float weights of {_describe(stored)}; this config builds "
            f"{_describe(source)}: give the same model.init_args.pretrained / checkpoint_path as the search")
    if digest is not None and digest != weights_sha256(weights):
        raise CheckpointMismatchError(
            f"the float weights this config builds from {_describe(source)} differ from those the search started "
            "from (their sha256): another hub revision, or layers timm initialises at random (a classifier head "
            "of another num_classes); use a self-contained checkpoint (checkpoint_weights: full)")
    state = checkpoint["state_dict"]
    for name, tensor in weights.items():
        state.setdefault(name, tensor)


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
