"""The one search driver: schedule, budget, counting and generator state of an Evol-Q run (DESIGN §1).

Lightning, the benchmarks and the tests all run a search through it, one step (one unit's K cycles) at a time
or to the end; its ``state_dict`` is everything a resumed run needs besides the model's scales.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import nn

from evolq_pl.errors import EvolQError
from evolq_pl.models.units import SearchUnit
from evolq_pl.quant.modes import first_nonfinite
from evolq_pl.search.evaluator import FitnessEvaluator, Reduce
from evolq_pl.search.evolution import EvolutionarySearch, SearchConfig

OnCandidate = Callable[[SearchUnit, float], None]


def schedule(num_units: int, passes: int) -> list[tuple[int, int]]:
    """(pass, unit index) pairs: every pass visits the units last to first."""
    return [(p, u) for p in range(passes) for u in reversed(range(num_units))]


class SearchDriver:
    """Runs ``config``'s search over ``units`` with ``evaluator`` as the fitness.

    Args:
        units: the searched units (``search_units(model, …)``), in forward order.
        config: the search settings (passes, budget, seed …).
        evaluator: the fitness of the model's current scales; or built later by ``prepare``, before ``start``
            (a Lightning run builds it once the calibration data is on the device).
        on_candidate: called with every evaluated candidate and its fitness (measurement only).
    """

    def __init__(self, units: Sequence[SearchUnit], config: SearchConfig, evaluator: FitnessEvaluator | None = None,
                 on_candidate: OnCandidate | None = None) -> None:
        self.units, self.config, self.evaluator = list(units), config, evaluator
        self.search = EvolutionarySearch(config)
        self.steps = schedule(len(self.units), config.passes)
        self.on_candidate = on_candidate
        self.position = 0  # steps done
        self.fitness_init: float | None = None
        self.fitness: float | None = None
        self.history: list[dict[str, Any]] = []

    def prepare(self, model: nn.Module, batches: Sequence[torch.Tensor], reduce: Reduce | None = None) -> None:
        """Build the evaluator: the fitness of ``model`` (quantized, calibrated) against its float self on
        ``batches`` (resident on its device; this rank's share under DDP, ``reduce`` summing over ranks)."""
        self.evaluator = FitnessEvaluator(model, batches, self.config, reduce=reduce)

    def start(self, max_steps: int | None = None) -> float:
        """Fitness of the starting scales (evaluated once; a restored driver keeps its own). ``max_steps``: the
        steps this run will take at most (a trainer's ``max_steps``/``fast_dev_run``), so that ``auto`` plans
        for the evaluations that will run, not for the whole schedule."""
        if self.evaluator is None:
            raise RuntimeError("SearchDriver.evaluator is not set")
        if self.fitness_init is None:
            self.fitness_init = self.fitness = self.evaluator()
            if not math.isfinite(self.fitness_init):
                where = first_nonfinite(self.evaluator.model, self.evaluator.batches[0])
                raise EvolQError(f"calibrated init: fitness {self.fitness_init} is not finite; the first non-finite "
                                 f"output comes from {where} (check the weights and the calibration images)")
        evaluations = self.remaining_evaluations
        if max_steps is not None:
            evaluations = min(evaluations, max(max_steps, 0) * self.config.cycles)
        self.evaluator.plan(evaluations, self.config.max_seconds)
        return self.fitness_init

    @property
    def remaining_evaluations(self) -> int:
        """Candidate evaluations left in the schedule (K per step), within ``max_evaluations``."""
        left = (len(self.steps) - self.position) * self.config.cycles
        cap = self.config.max_evaluations
        return min(left, cap - self.evaluations) if cap else left

    @property
    def evaluations(self) -> int:
        return self.search.evaluations

    @property
    def seconds(self) -> float:
        return self.search.elapsed

    @property
    def done(self) -> bool:
        return self.position >= len(self.steps) or self.search.exhausted

    def step(self) -> dict[str, Any]:
        """One unit's K cycles; returns the step's record (also kept in ``history``)."""
        if self.done:
            raise RuntimeError("the search is done: no step left in its schedule or budget")
        before = self.start() if self.fitness is None else self.fitness
        assert self.evaluator is not None
        pass_idx, unit_idx = self.steps[self.position]
        self.fitness = self.search.search_unit(self.units[unit_idx], self.evaluator, before, self.on_candidate)
        self.position += 1
        record = {"step": self.position, "pass": pass_idx, "unit": unit_idx, "fitness": self.fitness,
                  "improvement": before - self.fitness, "evaluations": self.evaluations, "seconds": self.seconds}
        self.history.append(record)
        return record

    def run(self) -> float:
        """Every remaining step; returns the final fitness."""
        self.start()
        while not self.done:
            self.step()
        assert self.fitness is not None
        return self.fitness

    def summary(self) -> dict[str, Any]:
        """The search's own numbers for results.json (its evaluator's compile summary included)."""
        compiled = self.evaluator.compile_summary() if self.evaluator is not None else FitnessEvaluator.EAGER_SUMMARY
        return {"fitness_init": self.fitness_init, "fitness_final": self.fitness, "evaluations": self.evaluations,
                "rejected": self.search.rejected, "search_seconds": self.seconds, **compiled}

    def state_dict(self) -> dict[str, Any]:
        return {"search": self.search.state_dict(), "position": self.position, "fitness_init": self.fitness_init,
                "fitness": self.fitness, "history": self.history}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.search.load_state_dict(state["search"])
        self.position, self.history = state["position"], list(state["history"])
        self.fitness_init, self.fitness = state["fitness_init"], state["fitness"]
