"""Validation and test accuracy, logged alike by every module of the project."""
from __future__ import annotations

import lightning as L
import torch

from evolq_pl.report.metrics import topk_metrics


class AccuracyModule(L.LightningModule):
    """Base: ``val/top1`` (and ``top5``) and ``test/…`` of ``self(x)``, in percent as fit's table and
    results.json give top-1 (checkpoints ranked on it rank the same). Call ``track_accuracy`` in ``__init__``."""

    def track_accuracy(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.val_metrics = torch.nn.ModuleDict(topk_metrics(num_classes))

    def setup(self, stage: str) -> None:
        """The data's classes are ones the model predicts (``evolq-pl`` checks it earlier, before the trainer runs)."""
        check = getattr(self.trainer.datamodule, "check_classes", None)
        if check is not None:
            check(self.num_classes)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        for metric in self.val_metrics.values():
            metric.update(logits, y)

    test_step = validation_step

    def _log_accuracy(self, prefix: str) -> None:
        for name, metric in self.val_metrics.items():  # compute() syncs the processes under DDP
            self.log(f"{prefix}/{name}", metric.compute() * 100, prog_bar=True)
            metric.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_accuracy("val")

    def on_test_epoch_end(self) -> None:
        self._log_accuracy("test")
