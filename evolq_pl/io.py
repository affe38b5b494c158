"""Atomic file writes: every file the project writes itself (results, summaries, plots, exports) is written under
a temporary name in its own folder and renamed into place when complete, so an interrupted or failed write never
truncates an existing file nor leaves a partial new one (a rerun that refuses existing outputs is not blocked by
debris). Below every layer: the standard library only.

Lightning writes its checkpoints itself; they are not written through here.
"""
from __future__ import annotations

import csv
import errno
import os
import secrets
import tempfile
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Iterator

from evolq_pl.errors import EvolQError


class WriteError(OSError, EvolQError):
    """An OS error while writing one of the project's files: one line naming the file and the errno."""

    def __str__(self) -> str:
        if not isinstance(self.errno, int):  # an OSError a library raised with a message only
            return f"cannot write {self.filename}: {self.strerror}"
        return f"cannot write {self.filename}: {self.strerror} (errno {self.errno}, {errno.errorcode.get(self.errno, '?')})"


def temporary_name(path: Path) -> Path:
    """A hidden unused name next to ``path`` that keeps its suffix (writers such as matplotlib pick the format by
    it): ``dir/.name.<random>.tmp.png`` for ``dir/name.png``."""
    return path.with_name(f".{path.stem}.{secrets.token_hex(4)}.tmp{path.suffix}")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # the bytes reach the disk before the name points at them
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path for the caller to write ``path``'s whole content to; on success it is renamed to
    ``path`` (``os.replace``, atomic within a folder); on any failure it is removed and ``path`` is left as it
    was. An ``OSError`` becomes a ``WriteError`` naming ``path`` and the errno.

    The temporary file is created by the writer (so it gets the usual permissions), in ``path``'s folder,
    which must exist.
    """
    path = Path(path)
    tmp = temporary_name(path)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except OSError as err:
        raise WriteError(err.errno, err.strerror or str(err), str(path)) from err
    finally:
        with suppress(OSError):  # cleanup must not hide the error being raised
            tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """``Path(path).write_text(text)``, atomically (``atomic_path``)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_csv_atomic(path: str | Path, rows: list[dict[str, Any]], fieldnames: list[str] | None = None) -> Path:
    """``rows`` as a CSV table (columns: ``fieldnames``, else the first row's keys), replaced atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames or list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return Path(path)


def not_writable(folder: Path) -> str | None:
    """Why nothing can be written in the existing ``folder`` (None when a file can): a real write, not the
    permission bits, which root, read-only mounts and network file systems make unreliable."""
    try:
        with tempfile.TemporaryFile(dir=folder):  # a unique name: several ranks probe the same folder at once
            return None
    except OSError as err:
        return str(err.strerror or err)


def ensure_writable_dir(path: Path, field: str) -> None:
    """Create ``path`` and probe it, or raise naming the field (before any expensive work)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise EvolQError(f"{field}={str(path)!r}: not a writable folder ({err.strerror or err})") from None
    if (why := not_writable(path)) is not None:
        raise EvolQError(f"{field}={str(path)!r}: not a writable folder ({why})")
