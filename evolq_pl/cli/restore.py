"""Build the configured module and data module (as ``fit`` would) for export / landscape, optionally
restoring a searched checkpoint: loaded weights-only through Lightning's loader, refused when it does
not match the config."""
from __future__ import annotations

from typing import Any

from evolq_pl.cli.trainer_cli import EvolQCLI, quiet_expected_warnings
from evolq_pl.lightning.checkpoint import load_checkpoint


def build(configs: list[str], extra: list[str], ckpt_path: str | None) -> tuple[Any, Any]:
    """(module, datamodule) from the configs; with ``ckpt_path`` the module holds the searched scales."""
    checkpoint = load_checkpoint(ckpt_path) if ckpt_path else None  # before building anything
    args = [a for c in configs for a in ("--config", c)] + extra
    quiet_expected_warnings()  # as for fit: e.g. that args are passed while sys.argv holds the command's own
    cli = EvolQCLI(args=args, run=False)
    module, dm = cli.model, cli.datamodule
    if checkpoint is not None:
        module.restore(checkpoint)
    return module, dm
