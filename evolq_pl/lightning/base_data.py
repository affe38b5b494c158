"""What the Evol-Q module needs from a DataModule, shared by Fashion-MNIST and ImageNet."""
from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader, IterableDataset

from evolq_pl.search.calibration import CalibrationData


class ScheduleDataset(IterableDataset):
    """The search schedule: yields (step, pass, unit index). Iterable, so that under DDP Lightning adds no
    distributed sampler: every rank runs every step (ranks split the calibration batches instead)."""

    def __init__(self, steps: list[tuple[int, int]]) -> None:
        self.steps = steps

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self):
        for i, (pass_idx, unit) in enumerate(self.steps):
            yield i, pass_idx, unit


class EvolQDataModule(L.LightningDataModule):
    """Base: calibration tensors, an evaluation loader, and — for a search — the (pass, unit) schedule as
    the training loader, so progress bar, ``max_steps`` and checkpoints keep their meaning. The schedule is the
    module's (``search_schedule()``, its driver's steps); a module without one (a classifier) trains on images."""

    holdout_size: int = 0  # held-out train images (for selection='holdout'), disjoint from calibration
    val_size: int = 0  # the validation split of train (choices are made on it)
    eval_split: str = "test"  # what eval_dataloader reads: "test", or "val" (the validation split)

    def calibration_data(self) -> CalibrationData:
        raise NotImplementedError

    def eval_dataloader(self) -> DataLoader:
        raise NotImplementedError

    def images_dataloader(self) -> DataLoader:
        """Training images (for classifier training)."""
        raise NotImplementedError

    def search_schedule(self) -> list[tuple[int, int]] | None:
        """The fitted module's search schedule; None when it runs no search (or outside ``fit``)."""
        if self.trainer is None or self.trainer.state.fn != "fit":
            return None
        schedule = getattr(self.trainer.lightning_module, "search_schedule", None)
        return schedule() if callable(schedule) else None

    def train_dataloader(self) -> DataLoader:
        steps = self.search_schedule()
        if steps is None:
            return self.images_dataloader()
        return DataLoader(ScheduleDataset(steps), batch_size=None, shuffle=False)

    def val_dataloader(self) -> DataLoader | list:
        if self.search_schedule() is not None:
            return []  # a search evaluates once, at the end (never per step: no selection on val)
        return self.eval_dataloader()

    def test_dataloader(self) -> DataLoader:
        return self.eval_dataloader()
