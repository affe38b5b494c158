"""Whether a checkpoint belongs to this run: the same model, sizes and quantization (and, for a resumed
search, the same search and selection). A mismatch is refused naming each field and both values."""
from __future__ import annotations

from typing import Any


class CheckpointMismatchError(ValueError):
    pass


def search_identity(cfg: dict[str, Any]) -> dict[str, Any]:
    """Search settings that must match between a checkpoint and its config (budgets and the compile backend
    may change)."""
    return {k: v for k, v in cfg.items() if k not in ("max_evaluations", "max_seconds", "compile_backend")}


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
