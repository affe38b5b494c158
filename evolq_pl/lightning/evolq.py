"""EvolQModule: the quantized model, FQ-ViT calibration and the Evol-Q search as a non-gradient loop.

One ``training_step`` = one search step (one unit's K cycles); the DataModule's train loader yields the
(pass, unit) schedule. Selection never looks at the evaluation set (unless ``selection='test_oracle'``,
a labelled measurement mode).
"""
from __future__ import annotations

import json
import math
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from evolq_pl.lightning.calibration import CalibrationData
from evolq_pl.lightning.plots import plot_progress
from evolq_pl.lightning.metrics import evaluate, first_images, spearman, topk_metrics
from evolq_pl.lightning.selection import build_selector, load_scales, snapshot_scales
from evolq_pl.models import create_quant_model, search_units
from evolq_pl.quant import QuantConfig, calibrate, quant_disabled
from evolq_pl.quant.quantizer import UniformQuantizer
from evolq_pl.search import EvolutionarySearch, FitnessEvaluator, SearchConfig, schedule


class CheckpointMismatchError(ValueError):
    pass


def peak_memory(device: torch.device) -> int:
    """Peak device memory (CUDA) or peak resident memory of this process (CPU), in bytes."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def is_calibrated(model: torch.nn.Module) -> bool:
    return all(q.calibrated for q in model.modules() if isinstance(q, UniformQuantizer))


class EvolQModule(L.LightningModule):
    """Evol-Q on a timm model.

    Args:
        model_name: a supported model (``vit_base_patch16_224``, ``deit_*``, ``levit_*``).
        model_kwargs: timm size overrides (``img_size``, ``in_chans``, ``num_classes``, ``depth`` …).
        pretrained: hub weights through timm (the paper's tags).
        checkpoint_path / checkpoint_sha256: a local float checkpoint (and its expected sha256).
        quant: quantization settings (defaults = the paper's e2e pipeline at W4A8).
        search: search settings (defaults = the paper).
        selection: ``calibration`` (default), ``holdout`` (held-out train split), or ``test_oracle``
            (published practice; measurement only).
        evaluate_at_end: evaluate float / init / Evol-Q on the evaluation split after ``fit`` and write
            ``results.json``.
        output_dir: where ``results.json`` goes (default: the trainer's log dir).
        matmul_precision: ``highest`` (full fp32, default: quantization fidelity) or ``high`` (TF32 on GPUs).
        candidate_eval_size: > 0 records, for every candidate the search evaluates, its calibration fitness
            and its top-1 on the first N evaluation images (for the fitness/accuracy rank correlation;
            never used for selection). Costs one evaluation pass per candidate.
    """

    def __init__(self, model_name: str, model_kwargs: dict[str, Any] | None = None, pretrained: bool = False,
                 checkpoint_path: str | None = None, checkpoint_sha256: str | None = None,
                 quant: QuantConfig | None = None, search: SearchConfig | None = None,
                 selection: str = "calibration", evaluate_at_end: bool = True, output_dir: str | None = None,
                 candidate_eval_size: int = 0, matmul_precision: str = "highest") -> None:
        super().__init__()
        self.automatic_optimization = False
        if matmul_precision not in ("highest", "high", "medium"):
            raise ValueError(f"matmul_precision={matmul_precision!r}: accepted: highest, high, medium")
        self.matmul_precision = matmul_precision
        self.quant_cfg, self.search_cfg = quant or QuantConfig(), search or SearchConfig()
        self.model_name, self.model_kwargs = model_name, dict(model_kwargs or {})
        self.selection, self.evaluate_at_end, self.output_dir = selection, evaluate_at_end, output_dir
        self.save_hyperparameters(ignore=["quant", "search"])
        self.model = create_quant_model(model_name, self.quant_cfg, pretrained=pretrained,
                                        checkpoint_path=checkpoint_path, checkpoint_sha256=checkpoint_sha256,
                                        **self.model_kwargs)
        cfg = self.search_cfg
        self.units = search_units(self.model, cfg.include_mlp, cfg.include_acts, cfg.include_embed)
        self.steps = schedule(len(self.units), self.search_cfg.passes)
        self.search = EvolutionarySearch(self.search_cfg)
        self.selector = build_selector(selection)
        self.search_step, self.search_seconds = 0, 0.0
        self.fitness_init: float | None = None
        self.current_fitness: float | None = None
        self.init_scales: dict[str, torch.Tensor] | None = None
        self.history: list[dict[str, Any]] = []
        self.candidate_eval_size = candidate_eval_size
        self.candidates: list[tuple[float, float]] = []  # (calibration fitness, eval-subset top-1)
        self._candidate_batches: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.evaluator: FitnessEvaluator | None = None
        self._finished = False
        self.num_classes = getattr(self.model, "num_classes", 1000)
        self.val_metrics = torch.nn.ModuleDict(topk_metrics(self.num_classes))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """A no-op optimizer: stepping it is how Lightning counts a search step as a training step
        (``global_step``, ``max_steps``, ``every_n_train_steps`` checkpoints). It owns no model parameter."""
        return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0)

    def search_schedule(self) -> list[tuple[int, int]]:
        return self.steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    # ----------------------------------------------------------------------------------------- setup
    def _calibration(self) -> CalibrationData:
        dm = self.trainer.datamodule
        if not hasattr(dm, "calibration_data"):
            raise TypeError(f"{type(dm).__name__} has no calibration_data(); use an EvolQDataModule")
        return dm.calibration_data()

    def _shard(self, batches: list[torch.Tensor]) -> list[torch.Tensor]:
        """This rank's calibration batches (every rank evaluates the same candidate on its shard)."""
        world, rank = self.trainer.world_size, self.trainer.global_rank
        if len(batches) < world:
            raise ValueError(f"{len(batches)} calibration batches cannot be sharded over {world} processes")
        return [b.to(self.device) for b in batches[rank::world]]

    def _reduce(self, t: torch.Tensor) -> torch.Tensor:
        return self.trainer.strategy.reduce(t, reduce_op="sum") if self.trainer.world_size > 1 else t

    def ensure_calibrated(self, calib: CalibrationData) -> None:
        if not is_calibrated(self.model):
            calibrate(self.model, [b.to(self.device) for b in calib.batches()])

    def check_before_work(self) -> None:
        """What can be checked before calibration and search: the holdout split a holdout selection needs,
        and a writable results folder (on every rank, so that all of them stop together)."""
        dm = self.trainer.datamodule
        if self.selection == "holdout" and getattr(dm, "holdout_size", 1) <= 0:  # a DataModule that declares it
            raise ValueError("selection='holdout' needs a held-out split: set data.init_args.holdout_size > 0")
        if self.evaluate_at_end:
            ensure_writable_dir(self.results_dir(), "model.init_args.output_dir")

    def on_fit_start(self) -> None:
        self.check_before_work()
        torch.set_float32_matmul_precision(self.matmul_precision)
        calib = self._calibration()
        self.ensure_calibrated(calib)
        cfg = self.search_cfg
        self.evaluator = FitnessEvaluator(self.model, self._shard(calib.batches()), cfg.loss, cfg.temperature,
                                          reduce=self._reduce, features=cfg.features,
                                          compile_backend=cfg.compile_backend)
        self._holdout = None
        if calib.holdout_images is not None:
            self._holdout = FitnessEvaluator(self.model, self._shard(calib.holdout_batches()), cfg.loss,
                                             cfg.temperature, use_cache=False, reduce=self._reduce,
                                             features=cfg.features)
        if self.fitness_init is None:  # a fresh run (a resumed one restores these)
            self.init_scales = snapshot_scales(self.model)
            self.fitness_init = self.current_fitness = self.evaluator()
            if not math.isfinite(self.fitness_init):
                where = first_nonfinite(self.model, self.evaluator.batches[0])
                raise ValueError(f"calibrated init: fitness {self.fitness_init} is not finite; the first non-finite "
                                 f"output comes from {where} (check the weights and the calibration images)")
            rank_zero_info(f"calibrated init: fitness {self.fitness_init:.6f} ({cfg.loss}), "
                           f"{len(self.units)} units × {cfg.passes} passes × {cfg.cycles} cycles")

    # ----------------------------------------------------------------------------------------- search
    def training_step(self, batch: Any, batch_idx: int) -> None:
        # ``batch`` = (step, pass, unit) from the schedule loader. The module's own counter is the source of
        # truth: a resumed run restarts the loader's iteration, while ``search_step`` comes from the checkpoint.
        if self.search_step >= len(self.steps) or self.search.exhausted:
            self.trainer.should_stop = True
            return None
        start = time.perf_counter()
        pass_idx, unit_idx = self.steps[self.search_step]
        unit = self.units[unit_idx]
        assert self.evaluator is not None
        self.evaluator.prepare(unit)
        before = self.current_fitness
        record_candidate = self._record_candidate if self.candidate_eval_size > 0 else None
        self.current_fitness = self.search.search_unit(unit, self.evaluator, before, on_candidate=record_candidate)
        self.selector.after_step(self.model, pass_idx, self._selection_score)
        self.search_step += 1
        self.search_seconds += time.perf_counter() - start
        record = {"step": self.search_step, "pass": pass_idx, "unit": unit_idx, "fitness": self.current_fitness,
                  "improvement": before - self.current_fitness, "evaluations": self.search.evaluations,
                  "seconds": self.search_seconds}
        self.history.append(record)
        self.log_dict({"search/fitness": self.current_fitness, "search/pass": float(pass_idx),
                       "search/unit": float(unit_idx), "search/evaluations": float(self.search.evaluations)},
                      prog_bar=True, on_step=True, on_epoch=False, batch_size=1)
        self.optimizers().step()  # no-op; advances global_step
        return None

    def _record_candidate(self, unit: Any, fitness: float) -> None:
        if self._candidate_batches is None:  # collected once, reused for every candidate
            self._candidate_batches = first_images(self.trainer.datamodule.eval_dataloader(), self.candidate_eval_size)
        top1 = evaluate(self.model, self._candidate_batches, self.num_classes, self.device)["top1"]
        self.candidates.append((fitness, top1))

    def _selection_score(self) -> float:
        if self.selector.name == "holdout":
            if self._holdout is None:
                raise ValueError("selection='holdout' needs a held-out split: set data.holdout_size > 0")
            return self._holdout()
        return evaluate(self.model, self.trainer.datamodule.eval_dataloader(), self.num_classes, self.device)["top1"]

    def on_train_end(self) -> None:
        self.finish()

    def on_fit_end(self) -> None:
        # a run resumed from a checkpoint saved after its last step skips the training loop (and
        # on_train_end): its results are still owed
        done = self.search_step >= len(self.steps) or self.search.exhausted
        if not self._finished and done and self.evaluator is not None:
            self.finish()

    def finish(self) -> None:
        """End of the search: the selector's pick goes in, then results.json (once)."""
        self._finished = True
        self.selector.finalize(self.model)
        if self.evaluator is not None:
            self.evaluator.invalidate()  # scales may have been replaced by the selector
        if self.evaluate_at_end:
            self.write_results()

    # ----------------------------------------------------------------------------------------- results
    @contextmanager
    def init_state(self) -> Iterator[None]:
        """Temporarily put back the calibrated initialisation's scales."""
        current = snapshot_scales(self.model)
        load_scales(self.model, self.init_scales or current)
        try:
            yield
        finally:
            load_scales(self.model, current)

    def settings(self) -> dict[str, Any]:
        """What makes two runs comparable (``seeds`` refuses to average runs whose settings differ)."""
        return {"model": self.model_name, "model_kwargs": self.model_kwargs, "quant": asdict(self.quant_cfg),
                "search": _search_identity(self.search_cfg.to_dict()), "selection": self.selection,
                "calib_size": sum(len(b) for b in self._calibration().batches())}

    def final_results(self) -> dict[str, Any]:
        """The search's numbers, then the evaluations; an evaluation that fails leaves the others and names
        itself under ``missing`` (the search is never lost)."""
        assert self.evaluator is not None
        settings = self.settings()
        results = {
            "model": self.model_name, "w_bits": self.quant_cfg.w_bits, "a_bits": self.quant_cfg.a_bits,
            "seed": self.search_cfg.seed, "calib_size": settings["calib_size"],
            "loss": self.search_cfg.loss, "selection": self.selection, "passes": self.search_cfg.passes,
            "fitness_init": self.fitness_init, "fitness_final": self.current_fitness,
            "evaluations": self.search.evaluations, "rejected": self.search.rejected,
            "search_seconds": self.search_seconds, "matmul_precision": self.matmul_precision,
            "peak_memory_bytes": peak_memory(self.device), "settings": settings,
        }
        if self.candidates:
            fit, acc = zip(*self.candidates)
            results["candidates"] = [list(c) for c in self.candidates]
            # fitness is minimised, accuracy maximised: a useful fitness gives a negative correlation
            results["spearman_fitness_top1"] = spearman(list(fit), list(acc))
        run = lambda: evaluate(self.model, self.trainer.datamodule.eval_dataloader(), self.num_classes,  # noqa: E731
                               self.device)
        stages = (("fitness_final", lambda: {"": self.evaluator()}), ("evolq", run),
                  ("float", lambda: _within(quant_disabled(self.model), run)), ("init", lambda: _within(self.init_state(), run)))
        for key, measure in stages:
            try:
                values = measure()
            except Exception as err:  # keep what was measured, say what is missing and why
                results.setdefault("missing", {})[key] = f"{type(err).__name__}: {err}"
                continue
            for metric, value in values.items():
                results[f"{metric}_{key}" if metric else key] = value
        return results

    def results_dir(self) -> Path:
        return Path(self.output_dir or self.trainer.log_dir or self.trainer.default_root_dir)

    def write_results(self) -> dict[str, Any]:
        results = self.final_results()
        if self.trainer.is_global_zero:
            out = self.results_dir()
            out.mkdir(parents=True, exist_ok=True)
            (out / "results.json").write_text(strict_json(results, indent=2))
            (out / "history.json").write_text(strict_json(self.history, indent=1))
            if self.history:
                plot_progress(self.history, self.fitness_init, out / "progress.png",
                              f"{self.model_name} W{self.quant_cfg.w_bits}A{self.quant_cfg.a_bits} seed {self.search_cfg.seed}")
            print(format_results(results))
            print(f"results written to {out / 'results.json'}")
            if "missing" in results:
                raise RuntimeError(f"the search finished and its results are in {out / 'results.json'}, but these "
                                   f"measurements failed: {results['missing']}")
        return results

    # ----------------------------------------------------------------------------------------- validate
    def on_validation_start(self) -> None:
        if not is_calibrated(self.model):
            self.ensure_calibrated(self._calibration())

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self.model(x)
        for name, metric in self.val_metrics.items():
            metric.update(logits, y)
            self.log(f"val/{name}", metric, on_step=False, on_epoch=True, prog_bar=True)

    test_step = validation_step

    # ----------------------------------------------------------------------------------------- checkpoints
    def _meta(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "model_kwargs": self.model_kwargs, "quant": asdict(self.quant_cfg)}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["evolq"] = {
            "meta": self._meta(), "search_config": self.search_cfg.to_dict(), "search": self.search.state_dict(),
            "selection": self.selection,
            "selector": self.selector.state_dict(), "search_step": self.search_step,
            "search_seconds": self.search_seconds, "fitness_init": self.fitness_init,
            "current_fitness": self.current_fitness, "init_scales": self.init_scales, "history": self.history,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("evolq")
        if state is None:
            raise CheckpointMismatchError("ckpt_path: not an evolq_pl search checkpoint (no 'evolq' state)")
        _check_same("checkpoint", state["meta"], self._meta())  # what the weights and scales mean
        if self._trainer is not None and self._trainer.state.fn == "fit":  # a resumed search: the same search
            _check_same("checkpoint search config", {**_search_identity(state["search_config"]),
                                                     "selection": state.get("selection", self.selection)},
                        {**_search_identity(self.search_cfg.to_dict()), "selection": self.selection})
            self.search.load_state_dict(state["search"])
            self.selector.load_state_dict(state["selector"])
            self.search_step, self.search_seconds = state["search_step"], state["search_seconds"]
            self.current_fitness, self.history = state["current_fitness"], state["history"]
        self.fitness_init, self.init_scales = state["fitness_init"], state["init_scales"]

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Put a searched checkpoint (a weights-only loaded dict) into this module outside a Trainer, as
        Lightning's restore does: checked against the config first, then the state dict, strictly."""
        self.on_load_checkpoint(checkpoint)
        self.load_state_dict(checkpoint["state_dict"])


def _within(context: Any, fn: Any) -> Any:
    with context:
        return fn()


def ensure_writable_dir(path: Path, field: str) -> None:
    """Create ``path`` and write a probe file in it, or raise naming the field (before any expensive work)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):  # a unique name: several ranks probe the same folder at once
            pass
    except OSError as err:
        raise ValueError(f"{field}={str(path)!r}: not a writable folder ({err.strerror or err})") from None


def first_nonfinite(model: torch.nn.Module, x: torch.Tensor) -> str:
    """Name (and type) of the first module, in execution order, whose output holds a NaN or an infinity."""
    found: list[str] = []
    names = {m: n for n, m in model.named_modules()}

    def hook(mod: torch.nn.Module, _: Any, out: Any) -> None:
        if not found and isinstance(out, torch.Tensor) and not torch.isfinite(out).all():
            found.append(f"{names[mod] or 'the model'} ({type(mod).__name__})")

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return found[0] if found else "no module output (the loss itself)"


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


def _search_identity(cfg: dict[str, Any]) -> dict[str, Any]:
    """Search settings that must match between a checkpoint and its config (budgets and the compile backend
    may change)."""
    return {k: v for k, v in cfg.items() if k not in ("max_evaluations", "max_seconds", "compile_backend")}


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out


def _check_same(what: str, stored: dict[str, Any], current: dict[str, Any]) -> None:
    stored, current = _flatten(stored), _flatten(current)
    diff = {k: (stored.get(k), current.get(k)) for k in set(stored) | set(current) if stored.get(k) != current.get(k)}
    if diff:
        details = "; ".join(f"{k}: checkpoint={a!r}, config={b!r}" for k, (a, b) in sorted(diff.items()))
        raise CheckpointMismatchError(f"{what} does not match this run ({details})")


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
           f"{r['search_seconds']:.1f} s search, selection={r['selection']})"
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join([head, *lines])
