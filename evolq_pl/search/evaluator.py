"""Fitness evaluation with prefix caching: the searched unit's input is computed once per unit, and
every candidate runs only the stages from that unit on (DESIGN §5)."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from evolq_pl.models.units import SearchUnit
from evolq_pl.quant.modes import quant_disabled
from evolq_pl.search.fitness import get_loss

Reduce = Callable[[torch.Tensor], torch.Tensor]


def _run(stages: Sequence[Callable], x: torch.Tensor) -> torch.Tensor:
    for stage in stages:
        x = stage(x)
    return x


class FitnessEvaluator:
    """Mean per-batch loss of the quantized model against the float teacher on resident calibration data.

    Args:
        model: a quantized, calibrated model exposing ``stage_fns()``.
        batches: calibration image batches, already on the model's device (this rank's shard under DDP).
        loss: a registered loss name (infonce, mse, kl, cosine); ``temperature`` is passed to it.
        use_cache: evaluate from the cached unit input (True) or with a full forward (False, for checks).
        reduce: sums a tensor over processes (identity on one process).
        teacher: precomputed teacher outputs per batch; computed with quantization off when None.
    """

    def __init__(self, model: nn.Module, batches: Sequence[torch.Tensor], loss: str = "infonce",
                 temperature: float = 3.0, use_cache: bool = True, reduce: Reduce | None = None,
                 teacher: Sequence[torch.Tensor] | None = None) -> None:
        self.model, self.batches = model, list(batches)
        self.loss_fn, self.temperature = get_loss(loss), temperature
        self.use_cache, self.reduce = use_cache, reduce or (lambda t: t)
        self.teacher = list(teacher) if teacher is not None else self.teacher_outputs(model, self.batches)
        self._cached: tuple[int, list[torch.Tensor]] | None = None
        self.evaluations = 0

    @staticmethod
    @torch.no_grad()
    def teacher_outputs(model: nn.Module, batches: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The true float model's outputs (every quantizer and the integer LayerNorm off)."""
        with quant_disabled(model):
            return [model(x) for x in batches]

    @torch.no_grad()
    def prepare(self, unit: SearchUnit) -> None:
        """Cache the input of ``unit``'s stage for every batch (it does not depend on the unit's scales)."""
        if not self.use_cache:
            return
        if self._cached is not None and self._cached[0] == unit.stage_index:
            return
        self._cached = None  # free the previous unit's cache before building the next one
        prefix = self.model.stage_fns()[: unit.stage_index]
        self._cached = (unit.stage_index, [_run(prefix, x) for x in self.batches])

    def invalidate(self) -> None:
        self._cached = None

    @torch.no_grad()
    def outputs(self, unit: SearchUnit | None = None) -> list[torch.Tensor]:
        """Model outputs per batch: from the cached input of ``unit`` or a full forward."""
        stages = self.model.stage_fns()
        if unit is None or not self.use_cache:
            return [_run(stages, x) for x in self.batches]
        if self._cached is None or self._cached[0] != unit.stage_index:
            raise RuntimeError(f"prepare({unit.name}) must be called before evaluating it")
        return [_run(stages[unit.stage_index:], h) for h in self._cached[1]]

    @torch.no_grad()
    def __call__(self, unit: SearchUnit | None = None) -> float:
        """Fitness of the model's current scales (lower is better); NaN if any batch loss is not finite."""
        total = torch.zeros(2, dtype=torch.float64, device=self.batches[0].device)
        for out, ref in zip(self.outputs(unit), self.teacher):
            total[0] += self.loss_fn(out, ref, self.temperature).double()
            total[1] += 1
        total = self.reduce(total)
        self.evaluations += 1
        return (total[0] / total[1]).item()
