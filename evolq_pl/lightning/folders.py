"""Folders a run writes into, checked before Lightning or the search touches them (a read-only one was a
traceback from inside Lightning, after minutes of work)."""
from __future__ import annotations

from pathlib import Path

import lightning as L

from evolq_pl.io import ensure_writable_dir


def logger_dirs(trainer: L.Trainer) -> dict[str, Path]:
    """The folders Lightning's loggers write into, by the setting that names them (a config's
    ``default_root_dir`` is usually theirs too; checkpoint and results folders are checked where they are used)."""
    return {f"trainer.logger ({type(lg).__name__}) save_dir": Path(lg.save_dir)
            for lg in trainer.loggers if getattr(lg, "save_dir", None)}


def check_logger_dirs(trainer: L.Trainer) -> None:
    """Create and probe every logger folder, or raise naming its setting (call from ``prepare_data``: before
    Lightning makes them)."""
    for field, path in logger_dirs(trainer).items():
        ensure_writable_dir(path, field)
