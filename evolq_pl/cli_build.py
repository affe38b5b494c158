"""Build the configured module and data module (as ``fit`` would) for the extra commands, optionally
restoring a searched checkpoint (refused when it does not match the config)."""
from __future__ import annotations

from typing import Any

import torch


def build(configs: list[str], extra: list[str], ckpt_path: str | None) -> tuple[Any, Any]:
    from evolq_pl.cli import EvolQCLI
    args = [a for c in configs for a in ("--config", c)] + extra
    cli = EvolQCLI(args=args, run=False)
    module, dm = cli.model, cli.datamodule
    if ckpt_path:
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        module.on_load_checkpoint(state)
        module.load_state_dict(state["state_dict"])
    return module, dm
