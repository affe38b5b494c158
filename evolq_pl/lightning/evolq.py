"""EvolQModule: the quantized model, FQ-ViT calibration and the Evol-Q search as a non-gradient loop.

One ``training_step`` = one step of the search (``evolq_pl.search.run.SearchRun``: one unit's K cycles); its
driver owns the (pass, unit) schedule, which the DataModule's train loader hands to Lightning
(``search_schedule``). Selection never looks at the evaluation set (unless ``selection='test_oracle'``, a labelled
measurement mode). What a finished search writes comes from ``evolq_pl.report``, what a checkpoint holds from
``evolq_pl.search``: this module is the glue.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info

from evolq_pl.errors import EvolQError
from evolq_pl.io import ensure_writable_dir
from evolq_pl.lightning.accuracy import AccuracyModule
from evolq_pl.lightning.base_data import EvolQDataModule
from evolq_pl.lightning.checkpoint import checkpoint_failure
from evolq_pl.lightning.folders import check_logger_dirs
from evolq_pl.models import create_quant_model, float_source
from evolq_pl.quant import QuantConfig, is_calibrated
from evolq_pl.report import PhaseTimes
from evolq_pl.report.metrics import evaluate
from evolq_pl.report.results import CandidateRecorder, IncompleteResultsError, final_results, write_results
from evolq_pl.search import SearchConfig
from evolq_pl.search.calibration import CalibrationData
from evolq_pl.search.run import SearchRun
from evolq_pl.search.state import FloatWeights, checked_state


class EvolQModule(AccuracyModule):
    """Evol-Q on a timm model.

    Args:
        model_name: a supported model (``vit_base_patch16_224``, ``deit_*``, ``levit_*``, ``swin_*``).
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
        note: one line printed above the results table and stored in results.json (what the run shows).
        checkpoint_weights: ``lean`` (default): search checkpoints hold what the search changes (scales, search
            state) and name the float weights they started from (pretrained tag or checkpoint file sha256),
            which a restore rebuilds from the config and checks; ``full``: every checkpoint also holds the float
            weights (self-contained). Weights that nothing names (a random initialisation) are always kept.
    """

    def __init__(self, model_name: str, model_kwargs: dict[str, Any] | None = None, pretrained: bool = False,
                 checkpoint_path: str | None = None, checkpoint_sha256: str | None = None,
                 quant: QuantConfig | None = None, search: SearchConfig | None = None,
                 selection: str = "calibration", evaluate_at_end: bool = True, output_dir: str | None = None,
                 candidate_eval_size: int = 0, matmul_precision: str = "highest", note: str | None = None,
                 checkpoint_weights: str = "lean") -> None:
        super().__init__()
        self.phases = PhaseTimes()
        self.automatic_optimization = False
        if matmul_precision not in ("highest", "high", "medium"):
            raise EvolQError(f"matmul_precision={matmul_precision!r}: accepted: highest, high, medium")
        if checkpoint_weights not in ("lean", "full"):
            raise EvolQError(f"checkpoint_weights={checkpoint_weights!r}: accepted: lean, full")
        self.matmul_precision, self.note = matmul_precision, note
        self.quant_cfg, self.search_cfg = quant or QuantConfig(), search or SearchConfig()
        self.model_name, self.model_kwargs = model_name, dict(model_kwargs or {})
        self.selection, self.evaluate_at_end, self.output_dir = selection, evaluate_at_end, output_dir
        self.save_hyperparameters(ignore=["quant", "search"])
        with self.phases("setup"):
            self.model = create_quant_model(model_name, self.quant_cfg, pretrained=pretrained,
                                            checkpoint_path=checkpoint_path, checkpoint_sha256=checkpoint_sha256,
                                            **self.model_kwargs)
            source = float_source(model_name, pretrained, checkpoint_path, checkpoint_sha256)
        self.float_weights = FloatWeights(self.model, source, lean=checkpoint_weights == "lean")
        self.track_accuracy(getattr(self.model, "num_classes", 1000))
        self.recorder = CandidateRecorder(self.model, self.eval_loader, candidate_eval_size, self.num_classes) \
            if candidate_eval_size > 0 else None
        self.search_run = SearchRun(self.model, self.search_cfg, selection, on_candidate=self.recorder)
        self._finished = False

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """A no-op optimizer: stepping it is how Lightning counts a search step as a training step
        (``global_step``, ``max_steps``, ``every_n_train_steps`` checkpoints). It owns no model parameter."""
        return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def datamodule(self) -> EvolQDataModule:
        dm = self.trainer.datamodule
        if not isinstance(dm, EvolQDataModule):
            raise EvolQError(f"data: {type(dm).__name__} is not an EvolQDataModule (calibration images, "
                            "evaluation loader); accepted: FashionMNISTDataModule, ImageNetDataModule")
        return dm

    def calibration(self) -> CalibrationData:
        with self.phases("data"):
            return self.datamodule().calibration_data()

    def eval_loader(self) -> Any:
        return self.datamodule().eval_dataloader()

    def results_dir(self) -> Path:
        return Path(self.output_dir or self.trainer.log_dir or self.trainer.default_root_dir)

    # ----------------------------------------------------------------------------------------- search
    def prepare_data(self) -> None:
        check_logger_dirs(self.trainer)

    def search_schedule(self) -> list[tuple[int, int]]:
        """The driver's (pass, unit) steps: a search's training batches (read by the DataModule's train loader)."""
        return self.search_run.driver.steps

    def _shard(self, batches: list[torch.Tensor]) -> dict[str, Any]:
        """This rank's share of ``batches`` on the device (every rank evaluates the same candidate) and the sum
        over ranks: a FitnessEvaluator's ``batches`` and ``reduce``."""
        world, rank = self.trainer.world_size, self.trainer.global_rank
        if len(batches) < world:
            raise EvolQError(f"{len(batches)} calibration batches cannot be sharded over {world} processes")
        reduce = (lambda t: self.trainer.strategy.reduce(t, reduce_op="sum")) if world > 1 else None
        return {"batches": [b.to(self.device) for b in batches[rank::world]], "reduce": reduce}

    def _evaluate(self) -> dict[str, Any]:
        return evaluate(self.model, self.eval_loader(), self.num_classes, self.device)

    def on_fit_start(self) -> None:
        # checked before any data is read, on every rank (so that all of them stop together)
        if self.search_run.selector.score == "holdout" and self.datamodule().holdout_size <= 0:
            raise EvolQError("selection='holdout' needs a held-out split: set data.init_args.holdout_size > 0")
        if self.evaluate_at_end:
            ensure_writable_dir(self.results_dir(), "model.init_args.output_dir")
        torch.set_float32_matmul_precision(self.matmul_precision)
        if self.device.type == "cuda":
            self.phases.sync = torch.cuda.synchronize
        test_top1 = lambda: self._evaluate()["top1"]  # noqa: E731 (selection='test_oracle' only)
        fitness = self.search_run.start(self.calibration(), self._shard, self.device, test_top1, self._steps_left(),
                                        self.phases)
        if (line := self.search_run.driver.evaluator.decision_line()) is not None:
            rank_zero_info(line)
        rank_zero_info(f"calibrated init: fitness {fitness:.6f} ({self.search_cfg.loss}), "
                       f"{len(self.search_run.units)} units × {self.search_cfg.passes} passes × "
                       f"{self.search_cfg.cycles} cycles")

    def _steps_left(self) -> int | None:
        """Search steps the trainer will run at most (``max_steps``, ``fast_dev_run``, an integer
        ``limit_train_batches``); None where only the schedule limits them."""
        # the driver's position, restored from a checkpoint before fit starts (the loops' global_step is not yet)
        limits = [self.trainer.max_steps - self.search_run.driver.position] if self.trainer.max_steps >= 0 else []
        if isinstance(self.trainer.limit_train_batches, int):
            limits.append(self.trainer.limit_train_batches)
        return min(limits) if limits else None

    def training_step(self, batch: Any, batch_idx: int) -> None:
        # ``batch`` = (step, pass, unit) from the schedule loader; the driver's position (restored from the
        # checkpoint) is the source of truth, since a resumed run restarts the loader's iteration
        driver = self.search_run.driver
        if driver.done:
            self.trainer.should_stop = True
            return None
        with self.phases("search"):
            record = self.search_run.step()
        self.log("search/fitness", record["fitness"], on_step=True, on_epoch=False, batch_size=1)
        # the bar shows 3 significant digits: the fitness moves in its 4th-6th, its gain over the init in its 1st
        gain = driver.fitness_init - record["fitness"]
        self.log_dict({"search/gain": gain, "search/pass": float(record["pass"]), "search/unit": float(record["unit"]),
                       "search/evaluations": float(record["evaluations"])},
                      prog_bar=True, on_step=True, on_epoch=False, batch_size=1)
        self.optimizers().step()  # no-op; advances global_step
        return None

    def on_train_end(self) -> None:
        self.finish()

    def on_fit_end(self) -> None:
        # a run resumed from a checkpoint saved after its last step skips the training loop (and on_train_end)
        driver = self.search_run.driver
        if not self._finished and driver.done and driver.evaluator is not None:
            self.finish()

    def finish(self) -> None:
        """End of the search: the selector's pick goes in, then results.json (once)."""
        self._finished = True
        self.search_run.finish()
        failure = checkpoint_failure(self.trainer)
        if not self.evaluate_at_end:
            if failure is not None:
                raise IncompleteResultsError(f"the search finished, but {failure}")
            return
        with self.phases("evaluation"):
            results = final_results(self.run_settings(), self.search_run.driver, self.model, self._evaluate,
                                    self.search_run.init_scales, self.recorder, self.matmul_precision, self.note,
                                    self.device)
        results["phase_seconds"] = dict(self.phases.seconds)
        if failure is not None:  # the results are written all the same, then the run ends in one line
            results.setdefault("missing", {})["checkpoint"] = failure
        if self.trainer.is_global_zero:
            q, s = self.quant_cfg, self.search_cfg
            write_results(self.results_dir(), results, self.search_run.driver.history,
                          f"{self.model_name} W{q.w_bits}A{q.a_bits} seed {s.seed}")

    # ----------------------------------------------------------------------------------------- validate
    def on_validation_start(self) -> None:
        if not is_calibrated(self.model):
            self.search_run.ensure_calibrated(self.calibration(), self.device, self.phases)

    # ----------------------------------------------------------------------------------------- checkpoints
    def run_settings(self) -> dict[str, Any]:
        """What makes two runs comparable (``seeds`` refuses to average runs whose settings differ)."""
        dm, identity = self.datamodule(), self.search_run.data_identity
        return {"model": self.model_name, "model_kwargs": self.model_kwargs, "quant": asdict(self.quant_cfg),
                "search": self.search_cfg.identity(), "selection": self.selection,
                "calib_size": identity["images"] if identity else len(self.calibration().images),
                "eval_split": dm.eval_split, "val_size": dm.val_size}

    def meta(self) -> dict[str, Any]:
        """What the weights and scales mean (a checkpoint of other values is refused)."""
        return {"model_name": self.model_name, "model_kwargs": self.model_kwargs, "quant": asdict(self.quant_cfg)}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["evolq"] = {"meta": self.meta(), **self.search_run.state_dict()}
        self.float_weights.drop(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        resuming = self._trainer is not None and self._trainer.state.fn == "fit"
        self.search_run.load_state_dict(checked_state(checkpoint, self.meta()), resuming)
        self.float_weights.fill(checkpoint)

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Put a searched checkpoint (a weights-only loaded dict) into this module outside a Trainer, as
        Lightning's restore does: checked against the config first, then the state dict, strictly."""
        self.on_load_checkpoint(checkpoint)
        self.load_state_dict(checkpoint["state_dict"])
