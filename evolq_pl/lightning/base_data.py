"""What the Evol-Q module needs from a DataModule, shared by Fashion-MNIST and ImageNet."""
from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader, IterableDataset

from evolq_pl.lightning.calibration import CalibrationData


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
    the training loader, so progress bar, ``max_steps`` and checkpoints keep their meaning. A search module
    hands its schedule over in ``setup`` (``search_steps``); without one, training reads images."""

    search_steps: list[tuple[int, int]] | None = None
    holdout_size: int = 0  # held-out train images (for selection='holdout'), disjoint from calibration
    val_size: int = 0  # the validation split of train (choices are made on it)
    eval_split: str = "test"  # what eval_dataloader reads: "test", or "val" (the validation split)

    def teardown(self, stage: str) -> None:
        if stage == "fit":
            self.search_steps = None  # the next fit (e.g. classifier training) reads images again

    def calibration_data(self) -> CalibrationData:
        raise NotImplementedError

    def eval_dataloader(self) -> DataLoader:
        raise NotImplementedError

    def images_dataloader(self) -> DataLoader:
        """Training images (for classifier training)."""
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader:
        if self.search_steps is None:
            return self.images_dataloader()
        return DataLoader(ScheduleDataset(self.search_steps), batch_size=None, shuffle=False)

    def val_dataloader(self) -> DataLoader | list:
        if self.search_steps is not None and self.trainer.state.fn == "fit":
            return []  # a search evaluates once, at the end (never per step: no selection on val)
        return self.eval_dataloader()

    def test_dataloader(self) -> DataLoader:
        return self.eval_dataloader()
