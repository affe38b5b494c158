"""Calibration data shared by every DataModule: a seeded subset of *train* images, resident in memory."""
from __future__ import annotations

from dataclasses import dataclass

import torch


def seeded_split(n: int, calib_size: int, holdout_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Disjoint calibration and held-out index sets drawn from ``range(n)`` with a private generator."""
    if calib_size <= 0:
        raise ValueError(f"calib_size={calib_size}: must be ≥ 1")
    if holdout_size < 0:
        raise ValueError(f"holdout_size={holdout_size}: must be ≥ 0")
    if calib_size + holdout_size > n:
        raise ValueError(f"calib_size + holdout_size = {calib_size + holdout_size} exceeds the {n} train images")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[:calib_size], perm[calib_size: calib_size + holdout_size]


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
            raise ValueError(f"calib batch_size={self.batch_size}: must be ≥ 1")
        if len(self.images) == 0:
            raise ValueError("calibration set is empty")

    def batches(self) -> list[torch.Tensor]:
        """Calibration images split into fixed batches (the last one may be smaller)."""
        return list(self.images.split(self.batch_size))

    def label_batches(self) -> list[torch.Tensor]:
        return list(self.labels.split(self.batch_size))

    def holdout_batches(self) -> list[torch.Tensor]:
        return [] if self.holdout_images is None else list(self.holdout_images.split(self.batch_size))
