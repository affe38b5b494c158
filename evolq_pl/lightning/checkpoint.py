"""Whether a checkpoint belongs to this run: the same model, sizes and quantization (and, for a resumed
search, the same search and selection). A mismatch is refused naming each field and both values."""
from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

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
            "init_scales": module.init_scales}


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
        module.selector.load_state_dict(state["selector"])
    module.init_scales = state["init_scales"]
