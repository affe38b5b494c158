"""Search checkpoints in Lightning: loading one weights-only, and the checkpoint callback that writes one per search
step (and reports a failed write instead of losing the run). What a checkpoint holds: ``evolq_pl.search.state``."""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.core.saving import pl_load
from lightning.pytorch.utilities import rank_zero_warn

from evolq_pl.io import ensure_writable_dir
from evolq_pl.models.factory import CheckpointError


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
