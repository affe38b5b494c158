"""Fitness evaluation with prefix caching: a unit's stage input is computed once and every candidate runs
only the stages from that unit on (DESIGN §5). The cache is keyed on what it depends on: the versions of
the tensors the earlier stages read, so no caller has to say when it went stale."""
from __future__ import annotations

import math
import time
import warnings
from contextlib import nullcontext
from functools import partial
from typing import Any, Callable, Sequence

import torch
from torch import nn

from evolq_pl.errors import EvolQError
from evolq_pl.models.units import SearchUnit
from evolq_pl.quant.exact import exact_compiled, inductor_options
from evolq_pl.quant.functional import all_finite
from evolq_pl.quant.modes import quant_disabled
from evolq_pl.search.cache import Key, default_budget, first_use, tensor_key
from evolq_pl.search.evolution import SearchConfig
from evolq_pl.search.fitness import get_loss

Reduce = Callable[[torch.Tensor], torch.Tensor]
# compile_backend="auto" tries compiling only searches expected to run this long eagerly: a cold compile took
# 17-20 s (DeiT-S, H200 and 2 CPU cores) and saved 17-22 % on a CPU, 49 % on an H200 (BENCHMARKS.md)
AUTO_TRIAL_SECONDS = 120.0


def _run(stages: Sequence[Callable], x: torch.Tensor) -> torch.Tensor:
    for stage in stages:
        x = stage(x)
    return x


def check_finite(what: str, tensors: Sequence[torch.Tensor], hint: str = "") -> None:
    """Raise naming the first of ``tensors`` that holds a NaN or an infinity."""
    bad = next((i for i, t in enumerate(tensors) if not all_finite(t)), None)
    if bad is not None:
        raise EvolQError(f"{what} {bad} contains NaN or inf values{f' ({hint})' if hint else ''}")


class FitnessEvaluator:
    """Mean per-batch loss of the quantized model against the float teacher on resident calibration data.

    Args:
        model: a quantized, calibrated model exposing ``stage_fns()``.
        batches: calibration image batches, already on the model's device (this rank's shard under DDP).
        config: the search settings it reads: ``loss``, ``temperature``, ``features`` (``logits``, the paper,
            or ``prelogits``: the features the classifier head reads) and ``compile_backend`` (a
            ``torch.compile`` backend for the stages, e.g. ``inductor``; None = eager; ``auto`` = decided by
            ``plan``, eager until then).
        use_cache: evaluate a unit from its cached stage input (True) or with a full forward (False, for checks).
        reduce: sums a tensor over processes (identity on one process).
        teacher: precomputed teacher outputs per batch; computed with quantization off when None.
        cache_budget_bytes: memory for cached stage inputs. Within it, one prefix forward keeps the inputs of
            every stage up to the unit's, and earlier units of the same pass reuse them; past it, only the
            unit's own input is kept. None = a quarter of available memory (CPU), half of free memory (CUDA).

    Raises:
        ValueError: at construction, when there are no batches, a calibration batch holds a NaN or an infinity,
            or the teacher's output on a batch does (every fitness would be NaN). Checked once here, so that
            the per-candidate path stays as fast as before; a non-finite fitness after that comes from the
            quantized model's scales: the search rejects such a candidate, and ``SearchDriver.start`` refuses a
            non-finite calibrated initialisation naming the module where it starts.
    """

    def __init__(self, model: nn.Module, batches: Sequence[torch.Tensor], config: SearchConfig | None = None,
                 use_cache: bool = True, reduce: Reduce | None = None, teacher: Sequence[torch.Tensor] | None = None,
                 cache_budget_bytes: int | None = None) -> None:
        config = config or SearchConfig()
        self.model, self.batches, self.prelogits = model, list(batches), config.features == "prelogits"
        if not self.batches:
            raise EvolQError("FitnessEvaluator: no calibration batches given")
        check_finite("calibration batch", self.batches)  # one min/max pass each
        self.loss_fn, self.temperature = get_loss(config.loss), config.temperature
        self.use_cache, self.reduce = use_cache, reduce or (lambda t: t)
        self.compile_backend = config.compile_backend
        self.teacher = list(teacher) if teacher is not None else self.teacher_outputs()
        check_finite("the teacher's output on calibration batch", self.teacher, "check the float weights")
        self.budget = cache_budget_bytes if cache_budget_bytes is not None else default_budget(self.batches[0].device)
        self._inputs: dict[int, tuple[Key, list[torch.Tensor]]] = {}  # stage → (key when stored, input per batch)
        self._earlier: list[list[nn.Module]] | None = None  # stage k → the modules of stages 0..k−1
        self._stage_bytes: list[int] = []
        self._compiled: list[Callable] | None = None  # every stage, compiled on first use
        self._warm: set[int] = set()  # suffix indices already run compiled
        self.compile_seconds = 0.0  # first compiled call from each index (compilation + one run)
        self.compile_fallback = False  # compiling failed and the evaluator went eager
        self.clock: Callable[[], float] = time.perf_counter  # (a fake one in tests)
        self.compile_decision: dict[str, object] | None = None  # what "auto" measured and chose

    def stages(self) -> list[Callable]:
        return self.model.stage_fns(prelogits=self.prelogits)

    @torch.no_grad()
    def teacher_outputs(self) -> list[torch.Tensor]:
        """The true float model's outputs (every quantizer and the integer LayerNorm off)."""
        with quant_disabled(self.model):
            return [_run(self.stages(), x) for x in self.batches]

    def _key(self, k: int) -> Key:
        """What the input of stage k depends on: the tensors of the stages before it."""
        assert self._earlier is not None
        return tensor_key(self._earlier[k])

    def stage_input(self, k: int) -> list[torch.Tensor]:
        """The input of stage ``k`` for every batch: cached while the tensors it depends on are unchanged,
        else one prefix forward."""
        if k == 0:
            return self.batches
        if self._earlier is None:
            owners, sizes = first_use(self.model, self.stages(), self.batches[0])
            self._earlier = [[m for stage in owners[:i] for m in stage] for i in range(len(owners))]
            self._stage_bytes = [s * sum(len(b) for b in self.batches) // len(self.batches[0]) for s in sizes]
        entry = self._inputs.get(k)
        if entry is None or entry[0] != self._key(k):
            self._fill(k)
        return self._inputs[k][1]

    @torch.no_grad()
    def _fill(self, k: int) -> None:
        """One prefix forward storing the inputs of stages k, k−1, … 1 while they fit in the budget."""
        self._inputs.clear()
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
        self._inputs = {i: (self._key(i), inputs) for i, inputs in stored.items()}

    def cached_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for _, ts in self._inputs.values() for t in ts)

    @torch.no_grad()
    def outputs(self, unit: SearchUnit | None = None) -> list[torch.Tensor]:
        """Model outputs per batch: from the (cached) input of ``unit``'s stage, or a full forward."""
        return self._outputs_from(0 if unit is None or not self.use_cache else unit.stage_index)

    def _outputs_from(self, index: int) -> list[torch.Tensor]:
        stages = self.stages()
        suffix, inputs = self._suffix(index, stages), self.stage_input(index)
        # compiled stages give eager's bits and read the quantized weights as graph inputs, computed eagerly once
        # per evaluation, only where their scales changed (outside the compile's try: a failing weight is not a
        # compile failure)
        with nullcontext() if self.compile_backend in (None, "auto") else exact_compiled(self.model):
            return [suffix(h) for h in inputs]

    def _suffix(self, index: int, stages: list[Callable]) -> Callable[[torch.Tensor], torch.Tensor]:
        """The forward from stage ``index`` on, through the compiled stages when a backend is set."""
        eager = partial(_run, stages[index:])
        if self.compile_backend in (None, "auto"):
            return eager
        return partial(self._call_compiled, index, stages, eager)

    def _call_compiled(self, index: int, stages: list[Callable], eager: Callable, h: torch.Tensor) -> torch.Tensor:
        """Each stage compiled once (identical blocks share one graph); the first call from an index counts as
        warm-up (``compile_seconds``). A failure warns once and the evaluator stays eager: the bits are the
        same either way (``evolq_pl.quant.exact``), so only the speed changes."""
        if self.compile_backend is None:  # an earlier batch of this evaluation failed to compile
            return eager(h)
        config = torch._dynamo.config
        key = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"  # older torch
        try:
            if self._compiled is None:
                options = inductor_options() if self.compile_backend == "inductor" else None
                self._compiled = [torch.compile(stage, backend=self.compile_backend, dynamic=False, options=options)
                                  for stage in stages]
            start = time.perf_counter()
            # one cache entry per distinct block shape (LeViT/Swin stages) under one code object
            with config.patch(**{key: max(getattr(config, key), len(stages) + 8)}):
                out = _run(self._compiled[index:], h)
            if index not in self._warm:
                self._warm.add(index)
                self.compile_seconds += time.perf_counter() - start
            return out
        except Exception as err:  # no C++ compiler, unsupported op, backend missing …: never lose the run
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            warnings.warn(f"search.compile_backend={self.compile_backend!r}: compiling the quantized forward "
                          f"failed ({type(err).__name__}: {first[:200]}); using eager (same results, slower)",
                          RuntimeWarning)
            self.compile_backend, self.compile_fallback = None, True
            return eager(h)

    def plan(self, evaluations: int, max_seconds: float = 0.0) -> None:
        """Settle ``compile_backend="auto"`` for a search of ``evaluations`` more candidate evaluations, from
        measurements on this machine: a full and a last-unit evaluation timed eager; if the eager search (their
        mean × ``evaluations``) would take under ``AUTO_TRIAL_SECONDS`` (capped by ``max_seconds`` when set) it
        stays eager (a compile warm-up of tens of seconds would not pay back); else the stages are compiled, a
        full evaluation is timed compiled and the faster path is kept (the warm-up is spent either way). Both
        paths give the same bits, so the choice changes the speed only. What was measured and chosen is in
        ``compile_decision``."""
        if self.compile_backend != "auto":
            return
        self.compile_backend = None
        self._fitness(0)  # warm (a resumed run has not evaluated yet: its first call quantizes every weight)
        # a unit's evaluation runs the stages from its own on: with blocks alike, the mean of the full forward
        # and the last block's suffix (the shortest) is the mean evaluation
        last = max(len(self.stages()) - 2, 0) if self.use_cache else 0
        self._fitness(last)  # fills the stage-input cache
        eager, last_s = self._agreed(self._timed(0), self._timed(last))
        mean = (eager + last_s) / 2
        expected = mean * evaluations
        if max_seconds > 0:  # a time budget caps the search (a cold compile would eat into it)
            expected = min(expected, max_seconds)
        decision: dict[str, object] = {"evaluations": evaluations, "eager_evaluation_s": eager,
                                       "eager_mean_evaluation_s": mean, "expected_eager_search_s": expected}
        if expected < AUTO_TRIAL_SECONDS:
            self.compile_decision = {**decision, "choice": "eager",
                                     "reason": f"an eager search of {expected:.0f} s is too short to repay a compile"}
            return
        self.compile_backend = "inductor"
        warm_up = self._timed(0)  # compiles every stage (the warm-up) and runs once
        compiled = self._timed(0)  # (eager where the compile failed: every rank makes the same calls)
        warm_up, compiled, failed = self._agreed(warm_up, compiled, float(self.compile_fallback))
        if failed:
            self.compile_fallback, compiled = True, math.inf
        faster = compiled < eager
        self.compile_backend = "inductor" if faster else None
        self.compile_decision = {**decision, "compile_s": warm_up, "compiled_evaluation_s": compiled,
                                 "choice": "inductor" if faster else "eager",
                                 "reason": "compile failed" if self.compile_fallback else
                                 f"a compiled evaluation takes {compiled / eager:.2f}x an eager one"}

    EAGER_SUMMARY = {"compile_backend": None, "compile_seconds": 0.0, "compile_fallback": False,
                     "compile_decision": None}  # the compile summary of a search that evaluated nothing

    def compile_summary(self) -> dict[str, Any]:
        """How the candidates were evaluated (results.json): the backend, its warm-up seconds, whether a failed
        compile fell back to eager, and ``auto``'s measured decision."""
        return {"compile_backend": self.compile_backend, "compile_seconds": self.compile_seconds,
                "compile_fallback": self.compile_fallback, "compile_decision": self.compile_decision}

    def decision_line(self) -> str | None:
        """``auto``'s choice and its reason in one line, None when nothing was decided."""
        d = self.compile_decision
        return None if d is None else f"compile_backend=auto: {d['choice']} ({d['reason']})"

    def _agreed(self, *values: float) -> list[float]:
        """``values`` averaged over the processes (identity on one): under DDP every rank then takes the same
        decision and makes the same collective calls."""
        t = self.reduce(torch.tensor([*values, 1.0], dtype=torch.float64, device=self.batches[0].device))
        return [(t[i] / t[-1]).item() for i in range(len(values))]

    def _timed(self, index: int) -> float:
        """Seconds of one evaluation from stage ``index`` on this machine (the result waits for the device)."""
        start = self.clock()
        self._fitness(index)
        return self.clock() - start

    @torch.no_grad()
    def __call__(self, unit: SearchUnit | None = None) -> float:
        """Fitness of the model's current scales (lower is better); NaN if any batch loss is not finite (the
        inputs and the teacher were checked at construction: a NaN here comes from the scales)."""
        return self._fitness(0 if unit is None or not self.use_cache else unit.stage_index)

    @torch.no_grad()
    def _fitness(self, index: int) -> float:
        total = torch.zeros(2, dtype=torch.float64, device=self.batches[0].device)
        for out, ref in zip(self._outputs_from(index), self.teacher):
            total[0] += self.loss_fn(out, ref, self.temperature).double()
            total[1] += 1
        total = self.reduce(total)
        return (total[0] / total[1]).item()
