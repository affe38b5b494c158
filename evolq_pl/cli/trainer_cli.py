"""LightningCLI for evolq_pl: ``fit`` / ``validate`` with YAML configs (class_path/init_args)."""
from __future__ import annotations

import json
import logging
import warnings
from argparse import ArgumentError
from pathlib import Path
from typing import Any, Optional

import lightning as L
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from evolq_pl.cli.parse_errors import ArgumentsError, condense
from evolq_pl.errors import EvolQError
from evolq_pl.io import ensure_writable_dir
from evolq_pl.lightning.checkpoint import load_checkpoint

# Lightning warnings that describe what the search does on purpose (eval-mode model, no per-step
# validation, a no-op optimizer that only counts search steps).
_EXPECTED_WARNINGS = (
    r"Found \d+ module\(s\) in eval mode", r"Total length of `list` across ranks is zero",
    r"Using ModelCheckpoint with manual optimization", r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"LightningCLI's args parameter is intended",  # evolq_pl.cli passes argv on itself (without --traceback)
)

# Lightning's info lines that say nothing about a search (hardware probes, advertising, a TF32 hint the search
# declines on purpose: ``matmul_precision`` defaults to fp32 for quantization fidelity)
_NOISE = ("GPU available:", "TPU available:", "HPU available:", "💡 Tip:", "You are using a CUDA device",
          "LOCAL_RANK:")
_NOISE_WARNINGS = (
    r"Your `IterableDataset` has `__len__` defined", r"The number of training batches \(\d+\) is smaller",
    r"The 'train_dataloader' does not have many workers", r"TensorFloat32 tensor cores for float32 matrix",
)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_NOISE)


# --ckpt_path names Lightning resolves itself (it loads them weights-only too)
CKPT_ALIASES = ("last", "best", "hpc", "registry")


def quiet_expected_warnings() -> None:
    """Lightning's warnings about what the search does on purpose, and its lines that say nothing about a search."""
    for pattern in (*_EXPECTED_WARNINGS, *_NOISE_WARNINGS):
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_DropNoise())


def _set_init_arg(component: Any, key: str, value: Any) -> None:
    """Set ``init_args.<key>`` of a class_path/init_args node (a logger, a callback) if it has that argument."""
    init = getattr(component, "init_args", None) if isinstance(component, Namespace) else None
    if init is not None and key in init:
        init[key] = value


def redirect_outputs(config: Namespace, run_dir: str) -> None:
    """Logs, checkpoints and results.json of this run under ``run_dir`` (replacing the config's paths)."""
    trainer = config.trainer
    trainer.default_root_dir = run_dir
    loggers = trainer.logger if isinstance(trainer.logger, list) else [trainer.logger]
    for logger in loggers:
        _set_init_arg(logger, "save_dir", run_dir)
    for callback in trainer.callbacks or []:
        _set_init_arg(callback, "dirpath", str(Path(run_dir) / "checkpoints"))
    if "init_args" in config.model and "output_dir" in config.model.init_args:
        config.model.init_args.output_dir = run_dir


# values given once, on the model; the data module's argument of the same meaning follows them
# (model.init_args path, data.init_args key)
LINKED = (("model_name", "model_name"), ("model_kwargs.img_size", "img_size"),
          ("model_kwargs.img_size", "image_size"))


def _model_value(init: Namespace, path: str) -> Any:
    name, _, key = path.partition(".")
    value = init.get(name)
    return value.get(key) if key and isinstance(value, dict) else (None if key else value)


def link_model_to_data(config: Namespace) -> None:
    """Set the data module's model name and input size from the model's (where the data class takes them); a
    data value given as well must agree, or the run is refused in one line naming both."""
    model, data = config.get("model"), config.get("data")
    if not (isinstance(model, Namespace) and isinstance(data, Namespace) and "init_args" in data):
        return
    for source, target in LINKED:
        value = _model_value(model.init_args, source)
        if target not in data.init_args or value is None:
            continue
        given = data.init_args[target]
        if given is not None and given != value:
            raise EvolQError(f"data.init_args.{target}={given!r} differs from model.init_args.{source}={value!r}: "
                             f"give it once, on the model (the data module follows it)")
        data.init_args[target] = value


def _finished(results: Path) -> bool:
    """A run folder's results.json of a finished run (one listing ``missing`` measurements may be rerun)."""
    try:
        return "missing" not in json.loads(results.read_text())
    except FileNotFoundError:
        return False
    except (OSError, ValueError):  # unreadable: not ours to replace silently
        return True


class EvolQCLI(LightningCLI):
    """LightningCLI with subclass mode for both the module and the data, so configs choose the classes.

    Where a config and ``--ckpt_path`` are both given, the config wins: the checkpoint's saved
    hyper-parameters are not merged into it, and a checkpoint that disagrees with the config (model, sizes,
    bit widths, search settings) is refused with the field and both values.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("auto_configure_optimizers", False)  # a search has no optimizer to choose (--help)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        # a frozen model has nothing to summarise; no sanity check (a search never validates per step); metrics
        # logged at every search step (a search has 6-120 steps, below Lightning's default interval of 50)
        kwargs.setdefault("trainer_defaults", {"enable_model_summary": False, "num_sanity_val_steps": 0,
                                               "log_every_n_steps": 1})
        kwargs.setdefault("parser_kwargs", {
            "fit": {"description": "Calibrate and run the Evol-Q search. With --ckpt_path, resume it: the config "
                                   "wins and a checkpoint of other settings is refused."},
            "validate": {"description": "Top-1/top-5 on the evaluation split. With --ckpt_path, of the searched "
                                        "checkpoint: the config wins and a checkpoint of other settings is refused."}})
        super().__init__(L.LightningModule, L.LightningDataModule, *args, **kwargs)

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        # a bad argument raises (evolq_pl.cli folds jsonargparse's report to one line) instead of printing the
        # usage; an abbreviated option (--trainer.max_epoch) is refused, not silently expanded
        kwargs.update(exit_on_error=False, allow_abbrev=False)
        return super().init_parser(**kwargs)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as err:  # jsonargparse's report of a bad argument, in one line
            raise ArgumentsError(condense(str(err))) from None

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {"fit": {"model", "train_dataloaders", "val_dataloaders", "datamodule"},
                "validate": {"model", "dataloaders", "datamodule"}}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--run_dir", type=Optional[str], default=None,
                            help="put this run's logs, checkpoints and results.json under this folder "
                                 "(replaces the config's default_root_dir, logger save_dir, checkpoint dirpath, "
                                 "output_dir)")
        parser.add_argument("--overwrite", type=bool, default=False,
                            help="fit: replace a finished run in --run_dir (refused otherwise)")

    def _parse_ckpt_path(self) -> None:
        """The config wins over the checkpoint's hyper-parameters (the checkpoint is checked against it instead)."""

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        ckpt = config.get("ckpt_path")
        if ckpt and ckpt not in CKPT_ALIASES:  # refuse a pickle payload or a foreign file before building anything
            load_checkpoint(ckpt)
        link_model_to_data(config)
        if config.get("run_dir"):
            ensure_writable_dir(Path(config.run_dir), "--run_dir")
            finished = Path(config.run_dir) / "results.json"
            if self.subcommand == "fit" and not ckpt and not config.get("overwrite") and _finished(finished):
                raise EvolQError(f"--run_dir={config.run_dir!r} holds a finished run ({finished}): give another "
                                 "--run_dir, or pass --overwrite true to replace it")
            redirect_outputs(config, config.run_dir)

    def before_fit(self) -> None:
        """Once the classes are built, before the trainer runs (no image read, no folder made): the data's labels
        are classes the model predicts."""
        check = getattr(self.datamodule, "check_classes", None)
        if check is not None and hasattr(self.model, "num_classes"):
            check(self.model.num_classes)

    before_validate = before_fit
