"""Which searched state is kept. Default: the search's own (best calibration fitness). The others exist to
measure: selection on a held-out *train* split, and — labelled as such — the published code's selection on
the test set (reference §6.10), to show how much it inflates a reported gain."""
from __future__ import annotations

import warnings
from typing import Any, Callable

import torch
from torch import nn

from evolq_pl.errors import EvolQError
from evolq_pl.quant import load_scales, snapshot_scales


class Selector:
    """Called after every search step with its score function; keeps the state it prefers.

    ``score``: which score it is handed — None (the search's own state is kept), ``holdout`` (fitness on the
    held-out train split) or ``test`` (top-1 on the evaluation set).
    """

    name = "calibration"
    score: str | None = None

    def __init__(self) -> None:
        self.best: dict[str, torch.Tensor] | None = None
        self.best_score: float | None = None

    def after_step(self, model: nn.Module, pass_idx: int, score: Callable[[], float]) -> None:
        """Default: the search's state is the selected one; nothing to do."""

    def finalize(self, model: nn.Module) -> None:
        if self.best is not None:
            load_scales(model, self.best)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_score": self.best_score}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_score = state["best"], state["best_score"]


class HoldoutSelector(Selector):
    """Keep the state with the lowest fitness on held-out train images (disjoint from calibration)."""

    name = "holdout"
    score = "holdout"

    def after_step(self, model: nn.Module, pass_idx: int, score: Callable[[], float]) -> None:
        value = score()
        if self.best_score is None or value < self.best_score:
            self.best, self.best_score = snapshot_scales(model), value


class TestSetSelector(Selector):
    """MEASUREMENT ONLY — the published code's test-set selection: after every unit, keep the state with the
    best *test* top-1 (pass 0 always overwrites; later passes only when strictly higher)."""

    name = "test_oracle"
    score = "test"

    def __init__(self) -> None:
        super().__init__()
        warnings.warn("selection='test_oracle' selects on the evaluation (test) set, like the published code; "
                      "its accuracy is not a valid test result", UserWarning)

    def after_step(self, model: nn.Module, pass_idx: int, score: Callable[[], float]) -> None:
        value = score()
        if pass_idx == 0 or self.best_score is None or value > self.best_score:
            self.best, self.best_score = snapshot_scales(model), value


SELECTORS: dict[str, type[Selector]] = {cls.name: cls for cls in (Selector, HoldoutSelector, TestSetSelector)}


def build_selector(name: str) -> Selector:
    if name not in SELECTORS:
        raise EvolQError(f"selection={name!r}: unknown; accepted: {', '.join(SELECTORS)}")
    return SELECTORS[name]()
