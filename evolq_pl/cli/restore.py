"""Build the configured module and data module (as ``fit`` would) for export / landscape, optionally
restoring a searched checkpoint: loaded weights-only through Lightning's loader, refused when it does
not match the config."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.core.saving import pl_load

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


def build(configs: list[str], extra: list[str], ckpt_path: str | None) -> tuple[Any, Any]:
    """(module, datamodule) from the configs; with ``ckpt_path`` the module holds the searched scales."""
    from evolq_pl.cli.trainer_cli import EvolQCLI
    checkpoint = load_checkpoint(ckpt_path) if ckpt_path else None  # before building anything
    args = [a for c in configs for a in ("--config", c)] + extra
    cli = EvolQCLI(args=args, run=False)
    module, dm = cli.model, cli.datamodule
    if checkpoint is not None:
        module.restore(checkpoint)
    return module, dm
