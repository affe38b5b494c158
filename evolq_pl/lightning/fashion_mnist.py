"""Fashion-MNIST: the offline, real-data benchmark (Debian's ``dataset-fashion-mnist`` or a download)."""
from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from evolq_pl.io import atomic_path
from evolq_pl.lightning.base_data import EvolQDataModule
from evolq_pl.lightning.calibration import CalibrationData, check_eval_split, check_sizes, seeded_split, \
    validation_split

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_CACHE = Path(os.environ.get("EVOLQ_DATA", Path.home() / ".cache" / "evolq_pl"))
MEAN, STD = 0.2860, 0.3530
_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


class DatasetNotFoundError(FileNotFoundError):
    """Raised when Fashion-MNIST is neither on disk nor downloadable."""


def _stage_debian_files(cache: Path, debian_dir: Path) -> bool:
    """Decompress Debian's ``*.gz`` files into torchvision's ``FashionMNIST/raw`` layout under ``cache``."""
    raw = cache / "FashionMNIST" / "raw"
    if all((raw / f).exists() for f in _FILES):
        return True
    if not all((debian_dir / f"{f}.gz").exists() for f in _FILES):
        return False
    raw.mkdir(parents=True, exist_ok=True)
    for f in _FILES:
        # atomically: an interrupted copy must not leave a short file that passes the existence check above
        with gzip.open(debian_dir / f"{f}.gz", "rb") as src, atomic_path(raw / f) as tmp, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return True


def load_fashion_mnist(root: str | Path | None = None, debian_dir: Path = DEBIAN_DIR) -> dict[str, torch.Tensor]:
    """Load all 70,000 images as uint8 tensors: ``{"train_x": (60000, 28, 28), "train_y", "test_x", "test_y"}``.

    Reads Debian's package files when present, otherwise torchvision downloads into ``root``.
    """
    from torchvision.datasets import FashionMNIST

    cache = Path(root) if root is not None else DEFAULT_CACHE
    staged = _stage_debian_files(cache, debian_dir)
    try:
        train = FashionMNIST(str(cache), train=True, download=not staged)
        test = FashionMNIST(str(cache), train=False, download=not staged)
    except Exception as err:  # network errors come in many types
        raise DatasetNotFoundError(
            f"Fashion-MNIST not found in {debian_dir} (Debian package) nor in {cache / 'FashionMNIST' / 'raw'}, "
            f"and the download failed ({type(err).__name__}: {err}). Install it with "
            "`apt-get install dataset-fashion-mnist`, or copy the four idx files into "
            f"{cache / 'FashionMNIST' / 'raw'}."
        ) from err
    return {"train_x": train.data, "train_y": train.targets, "test_x": test.data, "test_y": test.targets}


def preprocess(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """uint8 (N, 28, 28) → normalized float (N, 1, S, S); bilinear resize when S ≠ 28."""
    x = (images.float().div_(255.0).sub_(MEAN).div_(STD)).unsqueeze(1)  # (N, 1, 28, 28)
    if image_size != x.shape[-1]:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
    return x


class FashionMNISTDataModule(EvolQDataModule):
    """Fashion-MNIST for both jobs: training reference classifiers and feeding the Evol-Q search.

    Args:
        root: cache folder for the decompressed/downloaded files (default ``~/.cache/evolq_pl``).
        image_size: side of the square model input (None: 28, native; 64 for the LeViT-shaped model);
            ``evolq-pl`` sets it from the model's ``model_kwargs.img_size`` (given once, on the model).
        batch_size: training/eval batch size.
        calib_size: number of calibration images, a seeded subset of train.
        calib_batch_size: calibration batch size (the fitness is averaged per batch).
        holdout_size: optional held-out train images, disjoint from calibration (0 = none).
        val_size: a validation split of the train images, the same for every seed, disjoint from calibration
            and held-out images, and from classifier training run with the same ``val_size`` (0 = none; the
            shipped reference models were trained on all 60,000). Every choice is made on it.
        eval_split: what ``eval_dataloader`` (final numbers, classifier validation) reads: ``test`` or ``val``
            (the validation split, for making choices).
        eval_size: evaluate on the first ``eval_size`` images of the evaluation split (None = all).
        seed: seed of the calibration/held-out split.
    """

    def __init__(self, root: str | None = None, image_size: int | None = None, batch_size: int = 256,
                 calib_size: int = 1000, calib_batch_size: int = 100, holdout_size: int = 0, val_size: int = 0,
                 eval_split: str = "test", eval_size: int | None = None, seed: int = 0, num_workers: int = 0) -> None:
        super().__init__()
        image_size = 28 if image_size is None else image_size
        if image_size < 28:
            raise ValueError(f"image_size={image_size}: must be ≥ 28 (Fashion-MNIST is 28×28)")
        check_sizes(1, batch_size=batch_size, calib_size=calib_size, calib_batch_size=calib_batch_size,
                    eval_size=eval_size)
        check_sizes(0, holdout_size=holdout_size, val_size=val_size, num_workers=num_workers)
        check_eval_split(eval_split, val_size)
        self.save_hyperparameters()
        self.root, self.image_size, self.batch_size = root, image_size, batch_size
        self.calib_size, self.calib_batch_size, self.holdout_size = calib_size, calib_batch_size, holdout_size
        self.val_size, self.eval_split = val_size, eval_split
        self.eval_size, self.seed, self.num_workers = eval_size, seed, num_workers
        self._data: dict[str, torch.Tensor] | None = None

    def setup(self, stage: str | None = None) -> None:
        if self._data is not None:
            return
        raw = load_fashion_mnist(self.root)
        val_idx, rest = validation_split(len(raw["train_y"]), self.val_size)
        evaluation = (raw["test_x"], raw["test_y"]) if self.eval_split == "test" else \
            (raw["train_x"][val_idx], raw["train_y"][val_idx])
        eval_x, eval_y = (t[: self.eval_size] if self.eval_size is not None else t for t in evaluation)
        self._data = {
            "train_x": preprocess(raw["train_x"][rest], self.image_size), "train_y": raw["train_y"][rest],
            "eval_x": preprocess(eval_x, self.image_size), "eval_y": eval_y,
        }

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        self.setup()  # loads once; a loader asked for outside a Trainer works too
        assert self._data is not None
        ds = TensorDataset(self._data[f"{split}_x"], self._data[f"{split}_y"])
        return DataLoader(ds, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          drop_last=shuffle)

    def images_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def eval_dataloader(self) -> DataLoader:
        """The evaluation split (never used by the search): the test images, or the validation split."""
        return self._loader("eval")

    def calibration_data(self) -> CalibrationData:
        """Seeded calibration (and optional held-out) subsets of train (without the validation split), as
        resident tensors."""
        self.setup()
        assert self._data is not None
        calib_idx, holdout_idx = seeded_split(len(self._data["train_y"]), self.calib_size, self.holdout_size, self.seed)
        x, y = self._data["train_x"], self._data["train_y"]
        return CalibrationData(images=x[calib_idx], labels=y[calib_idx], batch_size=self.calib_batch_size,
                               holdout_images=x[holdout_idx] if len(holdout_idx) else None,
                               holdout_labels=y[holdout_idx] if len(holdout_idx) else None)
