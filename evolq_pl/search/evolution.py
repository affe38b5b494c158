"""The evolutionary search of reference §6.4–6.6, with its own seeded generator (no global RNG)."""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch

from evolq_pl.errors import EvolQError
from evolq_pl.models.units import SearchUnit
from evolq_pl.search.fitness import LOSSES

# paper's absolute mutation range by weight bits (reference §6.4); other widths use 1e-3 like the reference
MUTATION_RANGE = {2: 1e-3, 3: 1e-3, 4: 1e-3, 8: 1e-4}


def paper_mutation_range(bits: int) -> float:
    """The paper's absolute mutation range r (s' = |s + U(−r, r)|) for a unit of ``bits``-bit weights."""
    return MUTATION_RANGE.get(bits, 1e-3)


@dataclass
class SearchConfig:
    """Evol-Q hyper-parameters. Defaults = the paper.

    Args:
        passes: sweeps over all units (P).
        population: population size, re-seeded from the current scales at every unit.
        tournament: members drawn with replacement per tournament.
        cycles: candidates per unit per pass (K).
        loss: fitness loss (infonce, mse, kl, cosine); ``temperature`` T (infoNCE is scaled by 2T).
        features: fitness on the ``logits`` (paper) or on the ``prelogits`` features (beyond the paper).
        compile_backend: ``torch.compile`` backend for candidate evaluation: ``auto`` (default) times one
            evaluation eager and, where the eager search would take ≥ 120 s, one compiled with inductor, and
            keeps the faster (measured on the machine it runs on; ``FitnessEvaluator.plan``); a backend name
            (``inductor``) forces it, None = eager. Compiled and eager
            give the same bits; a failed compile warns once and runs eager.
        mutation_range: absolute range r of s' = |s + U(−r, r)|; None = by bits (1e-3 at ≤ 4, 1e-4 at 8).
        relative_mutation: s' = |s·(1 + U(−ρ, ρ))| with ρ = ``relative_range`` instead (beyond the paper).
        include_mlp / include_acts: also search MLP weight / activation scales (beyond the paper).
        include_embed: add a unit with the patch-embed / conv-stem weight scales (beyond the paper; the
            LeViT stem holds most of the W3 error of our Fashion-MNIST reference model, BENCHMARKS.md).
        max_evaluations / max_seconds: stop the search early (budget), 0 = unlimited.
        seed: seed of the search's own generator.
    """

    passes: int = 10
    population: int = 15
    tournament: int = 10
    cycles: int = 3
    loss: str = "infonce"
    temperature: float = 3.0
    features: str = "logits"
    compile_backend: str | None = "auto"
    mutation_range: float | None = None
    relative_mutation: bool = False
    relative_range: float = 0.05
    include_mlp: bool = False
    include_acts: bool = False
    include_embed: bool = False
    max_evaluations: int = 0
    max_seconds: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("population", "tournament"):
            if getattr(self, key) < 1:
                raise EvolQError(f"search.{key}={getattr(self, key)}: must be ≥ 1")
        for key in ("passes", "cycles", "max_evaluations"):
            if getattr(self, key) < 0:
                raise EvolQError(f"search.{key}={getattr(self, key)}: must be ≥ 0")
        if self.loss not in LOSSES:
            raise EvolQError(f"search.loss={self.loss!r}: unknown; accepted: {', '.join(sorted(LOSSES))}")
        if self.features not in ("logits", "prelogits"):
            raise EvolQError(f"search.features={self.features!r}: accepted: logits, prelogits")
        if self.temperature <= 0:
            raise EvolQError(f"search.temperature={self.temperature}: must be > 0")
        if self.mutation_range is not None and self.mutation_range <= 0:
            raise EvolQError(f"search.mutation_range={self.mutation_range}: must be > 0 (or null for the paper's)")
        if self.relative_range <= 0:
            raise EvolQError(f"search.relative_range={self.relative_range}: must be > 0")
        if self.compile_backend in ("None", "null"):  # `--…compile_backend null` arrives as a string (issue 27)
            self.compile_backend = None
        if self.compile_backend not in (None, "auto"):
            from torch._dynamo import list_backends
            if self.compile_backend not in list_backends(exclude_tags=()):
                raise EvolQError(f"search.compile_backend={self.compile_backend!r}: unknown; accepted: auto, null "
                                 f"(eager), or a torch.compile backend: {', '.join(list_backends())}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def identity(self) -> dict[str, Any]:
        """The settings a resumed search must share with its checkpoint (budgets and the compile backend may
        change: they change when the search stops and how fast it runs, not its steps)."""
        return self.identity_of(self.to_dict())

    @staticmethod
    def identity_of(settings: dict[str, Any]) -> dict[str, Any]:
        """``identity`` of stored settings (a checkpoint's ``search_config``)."""
        return {k: v for k, v in settings.items() if k not in ("max_evaluations", "max_seconds", "compile_backend")}


Candidate = tuple[float, torch.Tensor]


def rank(candidate: Candidate) -> float:
    """Sort key, lower is better; a non-finite fitness ranks last, so a finite candidate always beats it."""
    return candidate[0] if math.isfinite(candidate[0]) else math.inf


class EvolutionarySearch:
    """Tournament → mutate → evaluate → insert/drop-worst, K times per unit; the best is written back.

    The generator is owned here and saved in ``state_dict``, so a resumed search draws the same numbers.
    """

    def __init__(self, config: SearchConfig) -> None:
        self.config = config
        self.generator = torch.Generator().manual_seed(config.seed)
        self.evaluations = 0
        self.rejected = 0
        self.elapsed = 0.0

    def mutation_range(self, unit: SearchUnit) -> float:
        if self.config.mutation_range is not None:
            return self.config.mutation_range
        return paper_mutation_range(unit.bits)

    def mutate(self, scales: torch.Tensor, unit: SearchUnit) -> torch.Tensor:
        noise = torch.rand(scales.numel(), generator=self.generator, dtype=torch.float64) * 2 - 1  # U(−1, 1), CPU
        noise = noise.to(scales.device, scales.dtype)
        if self.config.relative_mutation:
            return (scales * (1 + noise * self.config.relative_range)).abs()
        return (scales + noise * self.mutation_range(unit)).abs()

    def select_parent(self, population: list[Candidate]) -> Candidate:
        drawn = torch.randint(len(population), (self.config.tournament,), generator=self.generator).tolist()
        return min((population[i] for i in drawn), key=rank)  # first of the best on ties

    @property
    def exhausted(self) -> bool:
        c = self.config
        return (c.max_evaluations > 0 and self.evaluations >= c.max_evaluations) or \
               (c.max_seconds > 0 and self.elapsed >= c.max_seconds)

    def search_unit(self, unit: SearchUnit, evaluate: Callable[[SearchUnit], float], fitness: float,
                    on_candidate: Callable[[SearchUnit, float], None] | None = None) -> float:
        """Run K cycles on ``unit`` whose current scales have ``fitness``; write back the best, return its fitness.

        A candidate whose fitness is not finite is rejected with a warning (the run goes on).
        """
        start = time.perf_counter()
        population: list[Candidate] = [(fitness, unit.get())] * self.config.population
        for _ in range(self.config.cycles):
            if self.exhausted:
                break
            child = self.mutate(self.select_parent(population)[1], unit)
            unit.set(child)
            f = evaluate(unit)
            self.evaluations += 1
            if on_candidate is not None:
                on_candidate(unit, f)
            if not math.isfinite(f):
                self.rejected += 1
                warnings.warn(f"unit {unit.name}: candidate fitness {f}; candidate rejected", RuntimeWarning)
            else:
                population = sorted(population + [(f, child)], key=rank)[: self.config.population]
            self.elapsed += time.perf_counter() - start
            start = time.perf_counter()
        best = population[0]
        unit.set(best[1])
        self.elapsed += time.perf_counter() - start
        return best[0]

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "evaluations": self.evaluations,
                "rejected": self.rejected, "elapsed": self.elapsed, "config": self.config.to_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.evaluations, self.rejected, self.elapsed = state["evaluations"], state["rejected"], state["elapsed"]
