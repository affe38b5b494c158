"""Whether a checkpoint belongs to this run: the same model, sizes and quantization (and, for a resumed
search, the same search and selection). A mismatch is refused naming each field and both values."""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Iterable

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

if TYPE_CHECKING:
    from evolq_pl.lightning.evolq import EvolQModule


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


def _meta(module: "EvolQModule") -> dict[str, Any]:
    return {"model_name": module.model_name, "model_kwargs": module.model_kwargs, "quant": asdict(module.quant_cfg)}


def search_state(module: "EvolQModule") -> dict[str, Any]:
    """The checkpoint's ``evolq`` entry: what the weights mean, the search config, driver and selector state."""
    return {"meta": _meta(module), "search_config": module.search_cfg.to_dict(), "selection": module.selection,
            "driver": module.driver.state_dict(), "selector": module.selector.state_dict(),
            "init_scales": module.init_scales, "calibration": module.data_identity}


def restore_search_state(module: "EvolQModule", checkpoint: dict[str, Any], resuming: bool) -> None:
    """Check a checkpoint against ``module``'s config (a resumed search: also the same search), then put its
    driver, selector and initial scales back (the state dict is Lightning's, or ``restore``'s, to load)."""
    state = checkpoint.get("evolq")
    if state is None or "driver" not in state:
        raise CheckpointMismatchError("ckpt_path: not an evolq_pl search checkpoint of this version "
                                      "(no 'evolq' driver state)")
    check_same("checkpoint", state["meta"], _meta(module))  # what the weights and scales mean
    if resuming:
        check_same("checkpoint search config",
                   {**search_identity(state["search_config"]), "selection": state["selection"]},
                   {**search_identity(module.search_cfg.to_dict()), "selection": module.selection})
        module.driver.load_state_dict(state["driver"])
        module.resumed_data_identity = state.get("calibration")  # checked once the data is read (fit start)
        module.selector.load_state_dict(state["selector"])
    module.init_scales = state["init_scales"]


def _describe(source: dict[str, str] | None) -> str:
    if source is None:
        return "timm's random initialisation (no pretrained tag, no checkpoint_path)"
    return ", ".join(f"{k} {v}" for k, v in source.items())


def drop_float_weights(checkpoint: dict[str, Any], names: Iterable[str], source: dict[str, str] | None) -> None:
    """Make ``checkpoint`` lean: the float weights (which a search never changes) are left out and named by
    their source instead. Weights that nothing names (a random initialisation) stay in."""
    if source is None:
        return
    state = checkpoint["state_dict"]
    for name in names:
        state.pop(name, None)
    checkpoint["evolq"]["float_weights"] = source


def fill_float_weights(checkpoint: dict[str, Any], weights: dict[str, torch.Tensor],
                       source: dict[str, str] | None) -> None:
    """Put back the float weights a lean checkpoint left out, from this module (built from the config's float
    source), after checking that the config names the same weights the search started from."""
    stored = checkpoint.get("evolq", {}).get("float_weights")
    if stored is None:  # a self-contained checkpoint
        return
    if stored != source:
        raise CheckpointMismatchError(
            f"the checkpoint was searched from the float weights of {_describe(stored)}; this config builds "
            f"{_describe(source)}: give the same model.init_args.pretrained / checkpoint_path as the search")
    state = checkpoint["state_dict"]
    for name, tensor in weights.items():
        state.setdefault(name, tensor)


class SearchCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint with a search's defaults: after every search step, one file (``last.ckpt``,
    replaced each step, never ``last-v1.ckpt``: it always names this run's newest step). Its writes are
    charged to the module's ``checkpoints`` phase. Any ModelCheckpoint argument may be given."""

    def __init__(self, every_n_train_steps: int = 1, save_last: bool = True, save_top_k: int = 0,
                 enable_version_counter: bool = False, **kwargs: Any) -> None:
        super().__init__(every_n_train_steps=every_n_train_steps, save_last=save_last, save_top_k=save_top_k,
                         enable_version_counter=enable_version_counter, **kwargs)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        with _charged(pl_module):
            super().on_train_batch_end(trainer, pl_module, *args)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        with _charged(pl_module):
            super().on_train_epoch_end(trainer, pl_module)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        with _charged(pl_module):
            super().on_exception(trainer, pl_module, exception)


def _charged(pl_module: L.LightningModule) -> AbstractContextManager:
    phases = getattr(pl_module, "phases", None)
    return phases("checkpoints") if phases is not None else nullcontext()
