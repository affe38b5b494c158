"""The loss landscape over one unit's scales: seeded random directions, every fitness loss, roughness."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from evolq_pl.errors import EvolQError
from evolq_pl.models.units import SearchUnit
from evolq_pl.search.evaluator import FitnessEvaluator
from evolq_pl.search.fitness import LOSSES


# how a grid point (a, b) moves the calibrated scales s0 along directions d1, d2
PERTURBATIONS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "relative": lambda s0, step: s0 * (1 + step),  # radius in units of each scale (the quantization step)
    "absolute": lambda s0, step: s0 + step,  # radius in scale units, like the paper's mutation s + U(−r, r)
}


@dataclass
class SweepSpec:
    """``dims`` (1 or 2) seeded directions d ~ N(0, 1); point (a, b) has scales s0·(1 + a·d1 + b·d2)
    (``mode="relative"``) or s0 + a·d1 + b·d2 (``"absolute"``), a, b ∈ linspace(−radius, radius, steps)."""

    unit: int
    radius: float = 0.05
    steps: int = 21
    dims: int = 1
    seed: int = 0
    mode: str = "relative"

    def validate(self, num_units: int | None = None) -> None:
        """Every field; the unit index too once the model's unit count is known."""
        if self.unit < 0 or (num_units is not None and self.unit >= num_units):
            raise EvolQError(f"unit={self.unit} out of range; valid: 0..{'N-1' if num_units is None else num_units - 1}")
        if self.steps < 1:
            raise EvolQError(f"steps={self.steps}: must be ≥ 1")
        if self.radius <= 0:
            raise EvolQError(f"radius={self.radius}: must be > 0")
        if self.dims not in (1, 2):
            raise EvolQError(f"dims={self.dims}: accepted 1 or 2")
        if self.mode not in PERTURBATIONS:
            raise EvolQError(f"mode={self.mode!r}: accepted {', '.join(PERTURBATIONS)}")


def directions(n: int, dims: int, seed: int) -> torch.Tensor:
    return torch.randn(dims, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@torch.no_grad()
def sweep(unit: SearchUnit, evaluator: FitnessEvaluator, labels: Sequence[torch.Tensor], spec: SweepSpec,
          top1_fn: Callable[[], float] | None = None, temperature: float = 3.0,
          on_point: Callable[[int, int], None] | None = None) -> list[dict[str, float]]:
    """Evaluate every grid point: each loss against the teacher, cross-entropy against the labels, and
    ``top1_fn()`` (evaluation top-1) when given; ``on_point(done, total)`` after each (progress). The unit's
    scales are restored afterwards."""
    s0 = unit.get()
    dirs = directions(s0.numel(), spec.dims, spec.seed).to(s0.device, s0.dtype)
    grid = torch.linspace(-spec.radius, spec.radius, spec.steps).tolist() if spec.steps > 1 else [0.0]
    points = [(a, b) for a in grid for b in (grid if spec.dims == 2 else [0.0])]
    rows = []
    try:
        for a, b in points:
            step = a * dirs[0] + (b * dirs[1] if spec.dims == 2 else 0)
            unit.set(PERTURBATIONS[spec.mode](s0, step).abs())
            outs = evaluator.outputs(unit)
            row = {"a": a, "b": b}
            for name, fn in LOSSES.items():
                row[name] = sum(fn(o, t, temperature).item() for o, t in zip(outs, evaluator.teacher)) / len(outs)
            if not evaluator.prelogits:
                row["ce"] = sum(F.cross_entropy(o, y.to(o.device)).item() for o, y in zip(outs, labels)) / len(outs)
            if top1_fn is not None:
                row["top1"] = top1_fn()
            rows.append(row)
            if on_point is not None:
                on_point(len(rows), len(points))
    finally:
        unit.set(s0)
    return rows


def roughness(values: Sequence[float]) -> dict[str, float]:
    """Scale-free jaggedness of a 1-D curve: total variation / range (1 for a monotone curve, 2 for a
    single bowl, larger when jagged) and the number of strict interior local minima."""
    v = list(values)
    tv = sum(abs(b - a) for a, b in zip(v, v[1:]))
    span = max(v) - min(v)
    minima = sum(1 for i in range(1, len(v) - 1) if v[i] < v[i - 1] and v[i] < v[i + 1])
    return {"tv_over_range": tv / span if span > 0 else 0.0, "local_minima": float(minima)}
