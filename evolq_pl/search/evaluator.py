"""Fitness evaluation with prefix caching: the searched unit's input is computed once per unit, and
every candidate runs only the stages from that unit on (DESIGN §5)."""
from __future__ import annotations

import warnings
from functools import partial
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


def default_budget(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    try:
        with open("/proc/meminfo") as f:
            avail = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable"))
    except (OSError, StopIteration):
        avail = 8 << 30
    return avail // 4


class FitnessEvaluator:
    """Mean per-batch loss of the quantized model against the float teacher on resident calibration data.

    Args:
        model: a quantized, calibrated model exposing ``stage_fns()``.
        batches: calibration image batches, already on the model's device (this rank's shard under DDP).
        loss: a registered loss name (infonce, mse, kl, cosine); ``temperature`` is passed to it.
        use_cache: evaluate from the cached unit input (True) or with a full forward (False, for checks).
        reduce: sums a tensor over processes (identity on one process).
        teacher: precomputed teacher outputs per batch; computed with quantization off when None.
        features: ``"logits"`` (the paper) or ``"prelogits"``: compare the features the classifier head
            reads instead of the logits (richer than 10 logits on a 10-class task).
        compile_backend: ``torch.compile`` backend for the candidate (suffix) forward, e.g. ``inductor``
            (GPU) or ``aot_eager``; None = eager. Fixed calibration shapes, so each suffix compiles once.
        cache_budget_bytes: memory for cached stage inputs. Within it, one forward caches the inputs of
            every stage up to the unit being prepared, and later (earlier-stage) units of the same pass reuse
            them; past it, only the prepared unit's input is kept (its prefix is recomputed per unit).
            None = a quarter of available memory (CPU) or half of free device memory (CUDA).

    Validity rule of the stage-input cache: after ``prepare(unit)`` the search only changes that unit's
    scales, so the cached inputs of stages ≤ its stage stay exact. Whoever changes other scales must call
    ``invalidate()``.
    """

    def __init__(self, model: nn.Module, batches: Sequence[torch.Tensor], loss: str = "infonce",
                 temperature: float = 3.0, use_cache: bool = True, reduce: Reduce | None = None,
                 teacher: Sequence[torch.Tensor] | None = None, cache_budget_bytes: int | None = None,
                 features: str = "logits", compile_backend: str | None = None) -> None:
        if features not in ("logits", "prelogits"):
            raise ValueError(f"features={features!r}: accepted: logits, prelogits")
        self.model, self.batches, self.prelogits = model, list(batches), features == "prelogits"
        self.loss_fn, self.temperature = get_loss(loss), temperature
        self.use_cache, self.reduce = use_cache, reduce or (lambda t: t)
        self.teacher = list(teacher) if teacher is not None else self.teacher_outputs()
        self.budget = cache_budget_bytes if cache_budget_bytes is not None else default_budget(self.batches[0].device)
        self._inputs: dict[int, list[torch.Tensor]] = {}  # stage index → its input, per batch
        self._valid_upto = -1
        self._stage_bytes: list[int] | None = None
        self._cached: tuple[int, list[torch.Tensor]] | None = None
        self.evaluations = 0
        self.prefix_forwards = 0
        self.compile_backend = compile_backend
        self._compiled: dict[int, Callable] = {}
        self._compile_failed: set[int] = set()

    def stages(self) -> list[Callable]:
        return self.model.stage_fns(prelogits=self.prelogits)

    @torch.no_grad()
    def teacher_outputs(self) -> list[torch.Tensor]:
        """The true float model's outputs (every quantizer and the integer LayerNorm off)."""
        with quant_disabled(self.model):
            return [_run(self.stages(), x) for x in self.batches]

    @torch.no_grad()
    def prepare(self, unit: SearchUnit) -> None:
        """Make the input of ``unit``'s stage available for every batch (it does not depend on the unit's
        scales); reuse the cache when it is still exact, else run the prefix once."""
        if not self.use_cache:
            return
        k = unit.stage_index
        if k == 0:  # the embedding: its input is the image batch itself; every later input now changes
            self.invalidate()
            self._cached = (0, self.batches)
            return
        if k not in self._inputs or k > self._valid_upto:
            self._fill(k)
        self._valid_upto = k
        for stale in [i for i in self._inputs if i > k]:  # later stages now depend on changing scales
            del self._inputs[stale]
        self._cached = (k, self._inputs[k])

    def _measure(self) -> list[int]:
        """Bytes of each stage's input over all batches, from one forward of the first batch."""
        sizes, x = [], self.batches[0]
        for stage in self.stages():
            sizes.append(x.numel() * x.element_size() * sum(len(b) for b in self.batches) // len(self.batches[0]))
            x = stage(x)
        return sizes

    def _fill(self, k: int) -> None:
        """One prefix forward storing the inputs of stages k, k−1, … 1 while they fit in the budget."""
        self._inputs.clear()
        self._cached = None
        if self._stage_bytes is None:
            self._stage_bytes = self._measure()
        keep, used = [], 0
        for i in range(k, 0, -1):
            if i != k and used + self._stage_bytes[i] > self.budget:
                break
            keep.append(i)
            used += self._stage_bytes[i]
        stages = self.stages()
        stored: dict[int, list[torch.Tensor]] = {i: [] for i in keep}
        for x in self.batches:
            for i in range(k):
                x = stages[i](x)
                if i + 1 in stored:
                    stored[i + 1].append(x)
        self._inputs = stored
        self.prefix_forwards += 1

    def cached_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for ts in self._inputs.values() for t in ts)

    def invalidate(self) -> None:
        self._inputs.clear()
        self._cached = None
        self._valid_upto = -1

    @torch.no_grad()
    def outputs(self, unit: SearchUnit | None = None) -> list[torch.Tensor]:
        """Model outputs per batch: from the cached input of ``unit`` or a full forward."""
        stages = self.stages()
        if unit is None or not self.use_cache:
            return [_run(stages, x) for x in self.batches]
        if self._cached is None or self._cached[0] != unit.stage_index:
            raise RuntimeError(f"prepare({unit.name}) must be called before evaluating it")
        suffix = self._suffix(unit.stage_index, stages)
        return [suffix(h) for h in self._cached[1]]

    def _suffix(self, index: int, stages: list[Callable]) -> Callable[[torch.Tensor], torch.Tensor]:
        """The forward from stage ``index`` on; compiled once per index when a backend is set, falling back
        to eager (with a warning) if compilation fails."""
        eager = partial(_run, stages[index:])
        if self.compile_backend is None or index in self._compile_failed:
            return eager
        return partial(self._call_compiled, index, eager)

    def _call_compiled(self, index: int, eager: Callable, h: torch.Tensor) -> torch.Tensor:
        # every suffix is the same code (_run) over another stage list: one dynamo cache entry per suffix,
        # so the recompile limit must admit one per stage (the default, 8, is below a 12-block ViT's count)
        try:
            config = torch._dynamo.config
            key = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"  # older torch
            limit = max(getattr(config, key), len(eager.args[0]) + index + 8)
            if index not in self._compiled:
                self._compiled[index] = torch.compile(eager, backend=self.compile_backend, dynamic=False)
            with config.patch(**{key: limit}):
                return self._compiled[index](h)
        except Exception as err:  # unsupported op, backend missing, …: never lose the run
            warnings.warn(f"torch.compile({self.compile_backend}) failed for the suffix from stage {index} "
                          f"({type(err).__name__}: {err}); using eager", RuntimeWarning)
            self._compile_failed.add(index)
            return eager(h)

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
