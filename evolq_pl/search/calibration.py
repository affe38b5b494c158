"""Calibration data shared by every DataModule: a seeded subset of *train* images, resident in memory."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from evolq_pl.errors import EvolQError


def seeded_split(n: int, calib_size: int, holdout_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Disjoint calibration and held-out index sets drawn from ``range(n)`` with a private generator."""
    if calib_size <= 0:
        raise EvolQError(f"calib_size={calib_size}: must be ≥ 1")
    if holdout_size < 0:
        raise EvolQError(f"holdout_size={holdout_size}: must be ≥ 0")
    if calib_size + holdout_size > n:
        raise EvolQError(f"calib_size + holdout_size = {calib_size + holdout_size} exceeds the {n} train images")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[:calib_size], perm[calib_size: calib_size + holdout_size]


VALIDATION_SEED = 20231002  # one validation split for every run (Evol-Q's ICCV date): choices compare alike


def validation_split(n: int, val_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed validation subset of ``range(n)`` (the same for every run seed) and the rest, in order.

    Choices (options, presets, losses, epochs) are made on it; calibration and held-out images are drawn from
    the rest, so they never overlap it; the test split only gives final numbers. ``val_size = 0``: no split.
    """
    if not 0 <= val_size < n:
        raise EvolQError(f"val_size={val_size}: must be ≥ 0 and below the {n} train images")
    if val_size == 0:
        return torch.zeros(0, dtype=torch.long), torch.arange(n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(VALIDATION_SEED))
    return perm[:val_size].sort().values, perm[val_size:].sort().values


def check_sizes(minimum: int, **sizes: int | None) -> None:
    """Each DataModule size ``data.init_args.<name>`` is ≥ ``minimum`` (None = not set), checked before any data
    is read; raises naming the first that is not, with its value (a negative ``eval_size`` once sliced
    ``[:-5]``: 9,995 images evaluated)."""
    for name, value in sizes.items():
        if value is not None and value < minimum:
            raise EvolQError(f"data.init_args.{name}={value}: must be ≥ {minimum}")


def check_eval_split(eval_split: str, val_size: int) -> None:
    if eval_split not in ("test", "val") or (eval_split == "val" and val_size <= 0):
        raise EvolQError(f"eval_split={eval_split!r} with val_size={val_size}: accepted: 'test', or 'val' with "
                         "val_size > 0")


@dataclass
class CalibrationData:
    """Calibration images (N, C, H, W) with labels, batched for fitness averaging; optional held-out split."""

    images: torch.Tensor
    labels: torch.Tensor
    batch_size: int = 100
    holdout_images: torch.Tensor | None = None
    holdout_labels: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.batch_size <= 0:
            raise EvolQError(f"calib batch_size={self.batch_size}: must be ≥ 1")
        if len(self.images) == 0:
            raise EvolQError("calibration set is empty")

    def identity(self) -> dict[str, object]:
        """What makes the fitness these images define: their count, batching and content (sha256 of the pixels,
        held-out images included). A resumed search must see the same."""
        h = hashlib.sha256()
        for t in (self.images, self.holdout_images):
            if t is not None:
                h.update(t.detach().cpu().contiguous().numpy().tobytes())
        held = 0 if self.holdout_images is None else len(self.holdout_images)
        return {"images": len(self.images), "batch_size": self.batch_size, "holdout_images": held,
                "sha256": h.hexdigest()}

    def batches(self) -> list[torch.Tensor]:
        """Calibration images split into fixed batches (the last one may be smaller)."""
        return list(self.images.split(self.batch_size))

    def label_batches(self) -> list[torch.Tensor]:
        return list(self.labels.split(self.batch_size))

    def holdout_batches(self) -> list[torch.Tensor]:
        return [] if self.holdout_images is None else list(self.holdout_images.split(self.batch_size))
