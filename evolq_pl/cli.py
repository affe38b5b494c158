"""LightningCLI for evolq_pl: ``fit`` / ``validate`` / ``test`` with YAML configs (class_path/init_args)."""
from __future__ import annotations

import warnings

import lightning as L
from lightning.pytorch.cli import LightningCLI


class EvolQCLI(LightningCLI):
    """LightningCLI with subclass mode for both the module and the data, so configs choose the classes."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        super().__init__(L.LightningModule, L.LightningDataModule, *args, **kwargs)


# subcommands beyond LightningCLI's: name → module with main(argv)
EXTRA_COMMANDS = {"seeds": "evolq_pl.seeds", "landscape": "evolq_pl.landscape_cli", "export": "evolq_pl.export.cli"}

# Lightning warnings that describe what the search does on purpose (eval-mode model, no per-step
# validation, a no-op optimizer that only counts search steps).
_EXPECTED_WARNINGS = (
    r"Found \d+ module\(s\) in eval mode", r"Total length of `list` across ranks is zero",
    r"Using ModelCheckpoint with manual optimization", r"`isinstance\(treespec, LeafSpec\)` is deprecated",
)


def main(args: list[str] | None = None) -> EvolQCLI | None:
    """LightningCLI subcommands, plus ``seeds`` (several seeds of one config, summarised)."""
    import sys
    argv = sys.argv[1:] if args is None else args
    if argv and argv[0] in EXTRA_COMMANDS:
        import importlib
        importlib.import_module(EXTRA_COMMANDS[argv[0]]).main(argv[1:])
        return None
    for pattern in _EXPECTED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    return EvolQCLI(args=args)
