"""Fashion-MNIST: the offline, real-data benchmark (Debian's ``dataset-fashion-mnist`` or a download)."""
from __future__ import annotations

import gzip
import math
import os
import shutil
import struct
import warnings
import zlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from evolq_pl.errors import EvolQError
from evolq_pl.io import atomic_path
from evolq_pl.lightning.base_data import EvolQDataModule
from evolq_pl.search.calibration import CalibrationData, seeded_split, validation_split

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_CACHE = Path(os.environ.get("EVOLQ_DATA", Path.home() / ".cache" / "evolq_pl"))
MEAN, STD = 0.2860, 0.3530
# the four idx files (torchvision's ``FashionMNIST/raw`` layout) and the uint8 array each holds
IDX_SHAPES: dict[str, tuple[int, ...]] = {
    "train-images-idx3-ubyte": (60000, 28, 28), "train-labels-idx1-ubyte": (60000,),
    "t10k-images-idx3-ubyte": (10000, 28, 28), "t10k-labels-idx1-ubyte": (10000,),
}
_KEYS = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
         "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte"}
_REINSTALL = "reinstall it: apt-get install --reinstall dataset-fashion-mnist"


class DatasetNotFoundError(FileNotFoundError, EvolQError):
    """Raised when Fashion-MNIST is neither on disk nor downloadable."""


class DatasetDamagedError(EvolQError):
    """Raised when a Fashion-MNIST file is damaged and cannot be rebuilt from a source."""


def idx_header(shape: tuple[int, ...]) -> bytes:
    """The idx header of a uint8 array: magic (0x08 = ubyte, then the rank), each dimension; big-endian."""
    return struct.pack(f">{len(shape) + 1}I", 0x800 + len(shape), *shape)


def idx_problem(path: Path, shape: tuple[int, ...]) -> str | None:
    """Why ``path`` is not the uint8 idx file of ``shape`` (truncated, garbage, another file); None if it is."""
    if not path.is_file():
        return "missing"
    header = idx_header(shape)
    with open(path, "rb") as f:
        head = f.read(len(header))
    if head != header:
        return f"not a uint8 idx file of shape {shape}: header {head[:16].hex() or 'empty'}"
    size, expected = path.stat().st_size, len(header) + math.prod(shape)
    return None if size == expected else f"{size:,} bytes, expected {expected:,}"


def read_idx(path: Path, shape: tuple[int, ...]) -> torch.Tensor:
    """The uint8 array of a checked idx file (``idx_problem`` None)."""
    return torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8, offset=len(idx_header(shape))).view(shape)


def _discard_damaged(raw: Path) -> list[str]:
    """Remove the cached files that are damaged, so that they are rebuilt; ``"path (why)"`` for each."""
    damaged = []
    for name, shape in IDX_SHAPES.items():
        path = raw / name
        if path.exists() and (why := idx_problem(path, shape)) is not None:
            try:
                path.unlink()
            except OSError as err:
                raise DatasetDamagedError(f"Fashion-MNIST cache file {path} is damaged ({why}) and cannot be removed "
                                          f"to rebuild it ({err.strerror}); remove it") from None
            damaged.append(f"{path} ({why})")
    return damaged


def _decompress(src: Path, dst: Path, shape: tuple[int, ...]) -> None:
    """Debian's ``src`` (gzip) into ``dst``, checked, atomically: an interrupted or damaged copy leaves no
    short file that would pass for the cache."""
    with atomic_path(dst) as tmp:
        try:
            with gzip.open(src, "rb") as f, open(tmp, "wb") as out:
                shutil.copyfileobj(f, out)
        except (gzip.BadGzipFile, EOFError, zlib.error) as err:
            raise DatasetDamagedError(f"{src} is damaged ({err}); {_REINSTALL}") from None
        if (why := idx_problem(tmp, shape)) is not None:
            raise DatasetDamagedError(f"{src} is damaged (decompressed: {why}); {_REINSTALL}")


def _stage_debian_files(raw: Path, debian_dir: Path) -> bool:
    """Decompress Debian's ``*.gz`` files of those that ``raw`` lacks; False when Debian's package is not there."""
    missing = [name for name in IDX_SHAPES if not (raw / name).exists()]
    if not all((debian_dir / f"{name}.gz").exists() for name in missing):
        return False
    raw.mkdir(parents=True, exist_ok=True)
    for name in missing:
        _decompress(debian_dir / f"{name}.gz", raw / name, IDX_SHAPES[name])
    return True


def _download(cache: Path, debian_dir: Path, damaged: list[str]) -> None:
    """torchvision's download into ``cache``; its failure names what was missing or damaged."""
    from torchvision.datasets import FashionMNIST

    raw = cache / "FashionMNIST" / "raw"
    try:
        FashionMNIST(str(cache), train=False, download=True)  # all four files
    except Exception as err:  # network errors come in many types
        failed = f"the download failed ({type(err).__name__}: {err})"
        hint = f"Install it with `apt-get install dataset-fashion-mnist`, or copy the four idx files into {raw}."
        if damaged:
            raise DatasetDamagedError(f"Fashion-MNIST cache file {damaged[0]} is damaged and could not be rebuilt: "
                                      f"Debian's package is not in {debian_dir} and {failed}. {hint}") from err
        raise DatasetNotFoundError(f"Fashion-MNIST not found in {debian_dir} (Debian package) nor in {raw}, and "
                                   f"{failed}. {hint}") from err


def load_fashion_mnist(root: str | Path | None = None, debian_dir: Path = DEBIAN_DIR) -> dict[str, torch.Tensor]:
    """Load all 70,000 images as uint8 tensors: ``{"train_x": (60000, 28, 28), "train_y", "test_x", "test_y"}``.

    Reads the idx files cached under ``root``, decompressed from Debian's package when present, otherwise
    downloaded by torchvision. A damaged cached file (truncated, garbage, another file) is named in a warning
    and rebuilt from the same sources; where that fails, ``DatasetDamagedError`` names it.
    """
    cache = Path(root) if root is not None else DEFAULT_CACHE
    raw = cache / "FashionMNIST" / "raw"
    damaged = _discard_damaged(raw)
    for what in damaged:
        warnings.warn(f"Fashion-MNIST cache file {what} is damaged; rebuilding it", RuntimeWarning)
    if not _stage_debian_files(raw, debian_dir):
        _download(cache, debian_dir, damaged)
    for name, shape in IDX_SHAPES.items():  # a download is checked too
        if (why := idx_problem(raw / name, shape)) is not None:
            raise DatasetDamagedError(f"Fashion-MNIST file {raw / name} is damaged after rebuilding it ({why})")
    data = {key: read_idx(raw / name, IDX_SHAPES[name]) for key, name in _KEYS.items()}
    return {key: t.long() if key.endswith("_y") else t for key, t in data.items()}


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

    num_classes = 10

    def __init__(self, root: str | None = None, image_size: int | None = None, batch_size: int = 256,
                 calib_size: int = 1000, calib_batch_size: int = 100, holdout_size: int = 0, val_size: int = 0,
                 eval_split: str = "test", eval_size: int | None = None, seed: int = 0, num_workers: int = 0) -> None:
        super().__init__()
        image_size = 28 if image_size is None else image_size
        if image_size < 28:
            raise EvolQError(f"image_size={image_size}: must be ≥ 28 (Fashion-MNIST is 28×28)")
        self.set_split(calib_size, calib_batch_size, holdout_size, val_size, eval_split, seed, num_workers,
                       batch_size=batch_size, eval_size=eval_size)
        self.save_hyperparameters()
        self.root, self.image_size, self.batch_size, self.eval_size = root, image_size, batch_size, eval_size
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
