"""What a finished search writes: results.json (strict JSON, partial when a measurement fails), history.json,
progress.png and a printed table; and the candidate recorder used to relate fitness to accuracy."""
from __future__ import annotations

import json
import math
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from evolq_pl.errors import EvolQError
from evolq_pl.io import write_text_atomic
from evolq_pl.quant import quant_disabled, scales_loaded
from evolq_pl.report.metrics import evaluate, first_images, spearman
from evolq_pl.report.plots import plot_progress
from evolq_pl.search import SearchDriver

Measure = Callable[[], dict[str, float]]


def peak_memory(device: torch.device) -> int:
    """Peak device memory (CUDA) or peak resident memory of this process (CPU), in bytes."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def strict_json(data: Any, **kwargs: Any) -> str:
    """JSON with every non-finite float written as null (``NaN`` is not JSON)."""
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v
    return json.dumps(clean(data), allow_nan=False, **kwargs)


def search_results(settings: dict[str, Any], driver: SearchDriver, recorder: "CandidateRecorder | None",
                   matmul_precision: str, peak_bytes: int) -> dict[str, Any]:
    """The search's own numbers (results.json before its evaluations)."""
    q, s = settings["quant"], driver.config
    summary = driver.summary()
    results = {
        "model": settings["model"], "w_bits": q["w_bits"], "a_bits": q["a_bits"], "seed": s.seed,
        "calib_size": settings["calib_size"], "eval_split": settings["eval_split"], "loss": s.loss,
        "selection": settings["selection"], "passes": s.passes,
        **{k: summary.pop(k) for k in ("fitness_init", "fitness_final", "evaluations", "rejected", "search_seconds")},
        "matmul_precision": matmul_precision, **summary, "peak_memory_bytes": peak_bytes, "settings": settings,
    }
    if recorder is not None and recorder.records:
        fit, acc = zip(*recorder.records)
        results["candidates"] = [list(c) for c in recorder.records]
        # fitness is minimised, accuracy maximised: a useful fitness gives a negative correlation
        results["spearman_fitness_top1"] = spearman(list(fit), list(acc))
    return results


def final_results(settings: dict[str, Any], driver: SearchDriver, model: nn.Module, run: Measure,
                  init_scales: dict[str, torch.Tensor] | None, recorder: "CandidateRecorder | None" = None,
                  matmul_precision: str = "highest", note: str | None = None,
                  device: torch.device = torch.device("cpu")) -> dict[str, Any]:
    """The search's numbers, then the evaluations (``run``: top-1/top-5 of ``model`` as it is) of Evol-Q, float
    and the calibrated init (a failed one is named under ``missing``)."""
    within = lambda context: lambda: _within(context, run)  # noqa: E731
    results = search_results(settings, driver, recorder, matmul_precision, peak_memory(device))
    if note:
        results["note"] = note
    assert driver.evaluator is not None
    return measure_into(results, [("fitness_final", lambda: {"": driver.evaluator()}), ("evolq", run),
                                  ("float", within(quant_disabled(model))),
                                  ("init", within(scales_loaded(model, init_scales)))])


def _within(context: AbstractContextManager, fn: Callable[[], Any]) -> Any:
    with context:
        return fn()


def measure_into(results: dict[str, Any], measures: Iterable[tuple[str, Measure]]) -> dict[str, Any]:
    """Run each measurement; ``{metric: v}`` goes in as ``metric_key`` (``key`` for the metric ``""``). One that
    fails leaves the others and names itself under ``missing`` (nothing measured is lost)."""
    for key, measure in measures:
        try:
            values = measure()
        except Exception as err:
            results.setdefault("missing", {})[key] = f"{type(err).__name__}: {err}"
            continue
        for metric, value in values.items():
            results[f"{metric}_{key}" if metric else key] = value
    return results


class IncompleteResultsError(EvolQError, RuntimeError):
    """The search finished and what was measured is written, but a part is missing (a measurement, the last
    checkpoint): one line naming what, after the results."""


def write_results(out: Path, results: dict[str, Any], history: Sequence[dict[str, Any]], title: str) -> None:
    """results.json, history.json, progress.png and the table; then ``IncompleteResultsError`` if a part is missing
    (``results["missing"]``: a failed measurement, an unwritten checkpoint)."""
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "results.json", strict_json(results, indent=2))
    write_text_atomic(out / "history.json", strict_json(list(history), indent=1))
    if history:
        plot_progress(history, results["fitness_init"], out / "progress.png", title)
    print(format_results(results))
    print(f"results written to {out / 'results.json'}")
    if "missing" in results:
        raise IncompleteResultsError(f"the search finished and its results are in {out / 'results.json'}, but "
                                     f"these parts failed: {results['missing']}")


def format_results(r: dict[str, Any]) -> str:
    """Small table: float / calibrated init / Evol-Q top-1 (and top-5) plus fitness."""
    def num(v: Any, digits: int) -> str:
        return "missing" if v is None else f"{v:.{digits}f}"

    rows = [("", "top-1 (%)", "top-5 (%)", "fitness")]
    for label, key, fit in (("float", "float", "-"), ("calibrated init", "init", num(r.get("fitness_init"), 6)),
                            ("Evol-Q", "evolq", num(r.get("fitness_final"), 6))):
        rows.append((label, num(r.get(f"top1_{key}"), 2), num(r.get(f"top5_{key}"), 2), fit))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    head = f"{r['model']} W{r['w_bits']}A{r['a_bits']} seed {r['seed']} ({r['evaluations']} evaluations, " \
           f"{r['search_seconds']:.1f} s search, selection={r['selection']}; top-1 on the " \
           f"{r.get('eval_split', 'test')} split, {r.get('images_evolq', '?')} images)"
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    phases = ["phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in r["phase_seconds"].items())] \
        if r.get("phase_seconds") else []
    return "\n".join([*([r["note"]] if r.get("note") else []), head, *lines, *phases])


class CandidateRecorder:
    """For every candidate the search evaluates: its calibration fitness and its top-1 on the first ``size``
    evaluation images (for the fitness/accuracy rank correlation; never used for selection)."""

    def __init__(self, model: nn.Module, loader: Callable[[], Iterable], size: int, num_classes: int) -> None:
        self.model, self.loader, self.size, self.num_classes = model, loader, size, num_classes
        self.records: list[tuple[float, float]] = []
        self._batches: list | None = None

    def __call__(self, unit: Any, fitness: float) -> None:
        if self._batches is None:  # collected once, reused for every candidate
            self._batches = first_images(self.loader(), self.size)
        device = next(self.model.parameters()).device
        self.records.append((fitness, evaluate(self.model, self._batches, self.num_classes, device)["top1"]))
