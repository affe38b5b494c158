"""What both exporters share: their error type and the check of an output path, made before any work."""
from __future__ import annotations

from pathlib import Path

from evolq_pl.errors import EvolQError
from evolq_pl.io import not_writable


class ExportError(EvolQError):
    pass


def check_output(output: Path, overwrite: bool, field: str = "path") -> None:
    """Refuse an output that is a folder, exists (unless ``overwrite``) or cannot be written; ``field`` names
    the argument in the message (``--output`` from the command line)."""
    if output.is_dir():
        raise ExportError(f"{field}={str(output)!r} is a folder; give a file name")
    if output.exists() and not overwrite:
        flag = "--overwrite" if field.startswith("--") else "overwrite=True (--overwrite)"
        raise ExportError(f"{field}={str(output)!r} exists; pass {flag} to replace it")
    parent = output.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ExportError(f"{field}={str(output)!r}: {parent} is a file, not a folder")
    if (why := not_writable(parent)) is not None:
        raise ExportError(f"{field}={str(output)!r}: {parent} is not writable ({why})")
