"""What the Evol-Q module needs from a DataModule, shared by Fashion-MNIST and ImageNet."""
from __future__ import annotations

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, IterableDataset

from evolq_pl.errors import EvolQError
from evolq_pl.search.calibration import CalibrationData, check_eval_split, check_sizes


class ScheduleDataset(IterableDataset):
    """The search schedule: yields (step, pass, unit index). Iterable, so that under DDP Lightning adds no
    distributed sampler: every rank runs every step (ranks split the calibration batches instead)."""

    def __init__(self, steps: list[tuple[int, int]]) -> None:
        self.steps = steps

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self):
        return ((i, pass_idx, unit) for i, (pass_idx, unit) in enumerate(self.steps))


class EvolQDataModule(L.LightningDataModule):
    """Base: calibration tensors, an evaluation loader, and — for a search — the (pass, unit) schedule as
    the training loader, so progress bar, ``max_steps`` and checkpoints keep their meaning. The schedule is the
    module's (``search_schedule()``, its driver's steps); a module without one (a classifier) trains on images."""

    holdout_size: int = 0  # held-out train images (for selection='holdout'), disjoint from calibration
    val_size: int = 0  # the validation split of train (choices are made on it)
    eval_split: str = "test"  # what eval_dataloader reads: "test", or "val" (the validation split)
    num_classes: int | None = None  # how many classes the labels index (None: not known before reading them)

    def set_split(self, calib_size: int, calib_batch_size: int, holdout_size: int, val_size: int, eval_split: str,
                  seed: int, num_workers: int, **batch_sizes: int | None) -> None:
        """The settings every DataModule shares, checked before any image is read (with its own sizes that must
        be ≥ 1, ``batch_sizes``), then kept: results.json and the printed table read ``eval_split`` from here."""
        check_sizes(1, calib_size=calib_size, calib_batch_size=calib_batch_size, **batch_sizes)
        check_sizes(0, holdout_size=holdout_size, val_size=val_size, num_workers=num_workers)
        check_eval_split(eval_split, val_size)
        self.calib_size, self.calib_batch_size, self.holdout_size = calib_size, calib_batch_size, holdout_size
        self.val_size, self.eval_split, self.seed, self.num_workers = val_size, eval_split, seed, num_workers

    def check_classes(self, model_classes: int) -> None:
        """Labels the model cannot predict are refused; fewer classes than the model's are read as its first
        ones (right for synthetic data or a folder of ImageNet's first synsets, wrong for another subset)."""
        name, have = type(self).__name__, self.num_classes
        if have is not None and have > model_classes:
            raise EvolQError(f"data: {name} has {have} classes, the model predicts {model_classes} "
                             f"(model.init_args.model_kwargs.num_classes); accepted: num_classes ≥ {have}")
        if have is not None and have < model_classes:
            rank_zero_warn(f"data: {name} has {have} classes, the model predicts {model_classes}: label i is read "
                           f"as the model's class i (a subset of other classes would be scored wrongly)")

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
