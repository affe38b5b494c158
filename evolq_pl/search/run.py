"""One Evol-Q run on a quantized model, without Lightning: the searched units, the driver, the selection, the
calibrated initial scales and the identity of the calibration images the fitness is on.

The Lightning module (``evolq_pl.lightning.evolq``) drives it: ``start`` once the data is read, ``step`` per
training step, ``finish`` at the end; ``state_dict``/``load_state_dict`` are a checkpoint's search state.
"""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any, Callable, Sequence

import torch
from torch import nn

from evolq_pl.errors import EvolQError
from evolq_pl.models import search_units
from evolq_pl.quant import calibrate, is_calibrated, snapshot_scales
from evolq_pl.search.calibration import CalibrationData
from evolq_pl.search.driver import OnCandidate, SearchDriver
from evolq_pl.search.evaluator import FitnessEvaluator
from evolq_pl.search.evolution import SearchConfig
from evolq_pl.search.selection import build_selector
from evolq_pl.search.state import check_same

# batches → this rank's share on the device and the sum over ranks: a FitnessEvaluator's ``batches``/``reduce``
Shard = Callable[[Sequence[torch.Tensor]], dict[str, Any]]
Timed = Callable[[str], AbstractContextManager]  # a phase's timer (``evolq_pl.report.PhaseTimes``)


def untimed(phase: str) -> AbstractContextManager:
    return nullcontext()


class SearchRun:
    """``config``'s search over ``model``'s units, kept by ``selection`` (``calibration``, ``holdout``,
    ``test_oracle``); ``on_candidate`` sees every evaluated candidate (measurement only)."""

    def __init__(self, model: nn.Module, config: SearchConfig, selection: str,
                 on_candidate: OnCandidate | None = None) -> None:
        self.model, self.config, self.selection = model, config, selection
        self.units = search_units(model, config.include_mlp, config.include_acts, config.include_embed)
        self.driver = SearchDriver(self.units, config, on_candidate=on_candidate)
        self.selector = build_selector(selection)
        self.init_scales: dict[str, torch.Tensor] | None = None  # the calibrated initialisation's
        self.score: Callable[[], float] | None = None  # what the selector ranks states by
        self.data_identity: dict[str, Any] | None = None  # the calibration images this search's fitness is on
        self.resumed_data_identity: dict[str, Any] | None = None  # a resumed checkpoint's

    def ensure_calibrated(self, calib: CalibrationData, device: torch.device, timed: Timed = untimed) -> None:
        """FQ-ViT calibration on every calibration image, unless the model is calibrated already."""
        if is_calibrated(self.model):
            return
        if self.init_scales is not None:  # restored from a checkpoint: calibrating would overwrite searched scales
            raise EvolQError("the checkpoint's model is not fully calibrated; refusing to recalibrate over its "
                             "searched scales (was it written by another version of evolq_pl?)")
        with timed("calibration"):
            calibrate(self.model, [b.to(device) for b in calib.batches()])

    def _score(self, calib: CalibrationData, shard: Shard, test_top1: Callable[[], float]) -> Callable[[], float] | None:
        """The selector's score: held-out fitness, test top-1 (measurement only) or none."""
        if self.selector.score == "holdout":
            if calib.holdout_images is None:
                raise EvolQError("data: the data module declares holdout_size > 0, but its calibration_data() has no "
                                 "held-out images")
            return FitnessEvaluator(self.model, config=self.config, use_cache=False, **shard(calib.holdout_batches()))
        return test_top1 if self.selector.score == "test" else None

    def start(self, calib: CalibrationData, shard: Shard, device: torch.device, test_top1: Callable[[], float],
              steps_left: int | None = None, timed: Timed = untimed) -> float:
        """Check a resumed run's images, calibrate a fresh one, put the float model's outputs on this rank's share
        of the images and evaluate the starting scales; returns their fitness."""
        self.data_identity = calib.identity()
        if self.resumed_data_identity is not None:  # the fitness must be on the images the search started on
            check_same("checkpoint calibration data", self.resumed_data_identity, self.data_identity)
        self.ensure_calibrated(calib, device, timed)
        with timed("teacher"):
            self.score = self._score(calib, shard, test_top1)
            self.driver.prepare(self.model, **shard(calib.batches()))
        if self.init_scales is None:  # a fresh run (a resumed one restores these)
            self.init_scales = snapshot_scales(self.model)
        with timed("search"):
            return self.driver.start(steps_left)

    def step(self) -> dict[str, Any]:
        """One unit's K cycles, then the selector's look at the new state; the driver's record of the step."""
        record = self.driver.step()
        self.selector.after_step(self.model, record["pass"], self.score)
        return record

    def finish(self) -> None:
        """The selected state goes into the model."""
        self.selector.finalize(self.model)

    def state_dict(self) -> dict[str, Any]:
        return {"search_config": self.config.to_dict(), "selection": self.selection,
                "driver": self.driver.state_dict(), "selector": self.selector.state_dict(),
                "init_scales": self.init_scales, "calibration": self.data_identity}

    def load_state_dict(self, state: dict[str, Any], resuming: bool) -> None:
        """A checkpoint's search state: the initial scales always; to resume, the driver and selector too, after
        checking that the checkpoint ran this search (its calibration images are checked at ``start``)."""
        if resuming:
            check_same("checkpoint search config",
                       {**SearchConfig.identity_of(state["search_config"]), "selection": state["selection"]},
                       {**self.config.identity(), "selection": self.selection})
            self.driver.load_state_dict(state["driver"])
            self.selector.load_state_dict(state["selector"])
            self.resumed_data_identity = state.get("calibration")
        self.init_scales = state["init_scales"]
