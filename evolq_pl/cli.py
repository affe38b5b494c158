"""LightningCLI for evolq_pl: ``fit`` / ``validate`` / ``test`` with YAML configs (class_path/init_args)."""
from __future__ import annotations

import lightning as L
from lightning.pytorch.cli import LightningCLI


class EvolQCLI(LightningCLI):
    """LightningCLI with subclass mode for both the module and the data, so configs choose the classes."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        super().__init__(L.LightningModule, L.LightningDataModule, *args, **kwargs)


def main(args: list[str] | None = None) -> EvolQCLI:
    return EvolQCLI(args=args)
