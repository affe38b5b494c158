"""ImageNet from an image folder (``train/``, ``val/``) or a Hugging Face ``datasets`` source.

Everything the data needs is checked in ``__init__``, before any model work starts.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset

from evolq_pl.errors import EvolQError
from evolq_pl.lightning.base_data import EvolQDataModule
from evolq_pl.search.calibration import CalibrationData, seeded_split, validation_split

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# the paper's preprocessing per family (reference §7): mean, std, crop_pct; bicubic resize
PAPER_TRANSFORMS = {
    "vit": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 0.9),
    "deit": (IMAGENET_MEAN, IMAGENET_STD, 0.875),
    "levit": (IMAGENET_MEAN, IMAGENET_STD, 0.875),
    "swin": (IMAGENET_MEAN, IMAGENET_STD, 0.9),
}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # any case, as torchvision


class DataError(EvolQError):
    pass


def paper_transform(model_name: str, img_size: int = 224) -> Callable:
    """Resize the shorter side to ⌊img_size / crop_pct⌋ (bicubic), center-crop, normalise (reference §7): timm's
    eval transform with the paper's crop and statistics per family."""
    from timm.data import create_transform

    family = model_name.split("_")[0]
    if family not in PAPER_TRANSFORMS:
        raise DataError(f"no paper transform for model {model_name!r}; families: {', '.join(PAPER_TRANSFORMS)}")
    mean, std, crop_pct = PAPER_TRANSFORMS[family]
    return create_transform(input_size=(3, img_size, img_size), is_training=False, interpolation="bicubic",
                            mean=mean, std=std, crop_pct=crop_pct, crop_mode="center")


def timm_transform(model_name: str) -> Callable:
    """The eval transform of the model's timm pretrained config."""
    import timm
    from timm.data import create_transform, resolve_data_config

    from evolq_pl.models.factory import PRETRAINED_TAGS
    cfg = timm.models.get_pretrained_cfg(PRETRAINED_TAGS.get(model_name, model_name))
    return create_transform(**resolve_data_config(pretrained_cfg=cfg.to_dict()))


TRANSFORMS: dict[str, Callable[[str], Callable]] = {"paper": paper_transform, "timm": timm_transform}


def _check_folder(root: Path) -> list[str]:
    """Validate ``root/train`` and ``root/val``; return the class names."""
    classes = {}
    for split in ("train", "val"):
        d = root / split
        if not d.is_dir():
            raise DataError(f"ImageNet folder {root} has no '{split}/' directory (expected {d})")
        names = sorted(p.name for p in d.iterdir() if p.is_dir())
        if not names:
            raise DataError(f"{d} has no class folders")
        for c in names:  # every class needs an image, at any depth (as torchvision's ImageFolder)
            if not any(f.suffix.lower() in IMAGE_EXTENSIONS for f in (d / c).rglob("*")):
                raise DataError(f"class folder {d / c} has no images ({', '.join(IMAGE_EXTENSIONS[:4])}, … in any case)")
        classes[split] = names
    if classes["train"] != classes["val"]:
        only_t = sorted(set(classes["train"]) - set(classes["val"]))[:5]
        only_v = sorted(set(classes["val"]) - set(classes["train"]))[:5]
        raise DataError(f"class folders differ between train/ and val/: only in train {only_t}, only in val {only_v}")
    return classes["train"]


def load_image(path: str) -> Image.Image:
    """An RGB image, or a DataError naming the file (a truncated or corrupt image found mid-run)."""
    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read image {path}: {err}") from None


class HFImages(Dataset):
    """A Hugging Face dataset split as (transformed image, label) pairs."""

    def __init__(self, ds: Any, transform: Callable, image_column: str, label_column: str) -> None:
        self.ds, self.transform, self.image_column, self.label_column = ds, transform, image_column, label_column

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        row = self.ds[int(i)]
        image = row[self.image_column]
        if isinstance(image, (str, Path)):
            image = Image.open(image)
        return self.transform(image.convert("RGB")), int(row[self.label_column])


def _load_hf(source: str, train_split: str, val_split: str) -> tuple[Any, Any]:
    import datasets

    path = Path(source)
    if path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
        ds = datasets.load_from_disk(str(path))
    elif path.is_dir():
        ds = datasets.load_dataset("imagefolder", data_dir=str(path))
    else:
        ds = datasets.load_dataset(source)  # hub name, e.g. imagenet-1k (needs your token)
    for split in (train_split, val_split):
        if split not in ds:
            raise DataError(f"dataset {source!r} has no split {split!r}; it has {', '.join(ds)}")
    return ds[train_split], ds[val_split]


class ImageNetDataModule(EvolQDataModule):
    """ImageNet (or any image-classification set laid out like it) for Evol-Q.

    Args:
        root: image-folder root with ``train/`` and ``val/`` class folders.
        hf_dataset: instead of ``root``: a hub name (``imagenet-1k``) or a local saved/imagefolder dataset.
        hf_train_split, hf_val_split, image_column, label_column: how to read the HF dataset.
        model_name: selects the transform (the paper's per family, or timm's pretrained config); ``evolq-pl``
            sets it from ``model.init_args.model_name`` (given once, on the model).
        transform: ``paper`` (bicubic, crop 0.875 DeiT/LeViT, 0.9 ViT) or ``timm``.
        img_size: model input size for the paper transform (None: 224, or the model's ``model_kwargs.img_size``
            under ``evolq-pl``).
        calib_size, calib_batch_size, holdout_size, seed: the seeded calibration subset of train.
        val_size: a validation split of train, the same for every seed, disjoint from calibration and held-out
            images (0 = none); every choice is made on it.
        eval_split: what the evaluation loader reads: ``test`` (the ``val/`` folder or ``hf_val_split``, which
            the paper reports as its test set) or ``val`` (the validation split of train, for choices).
        eval_batch_size, num_workers: evaluation loader (``num_workers`` None: one per CPU core, at most 8 —
            Lightning warns below that on a big machine, and more workers than cores only contend).
    """

    def __init__(self, root: str | None = None, hf_dataset: str | None = None, hf_train_split: str = "train",
                 hf_val_split: str = "validation", image_column: str = "image", label_column: str = "label",
                 model_name: str | None = None, transform: str = "paper", img_size: int | None = None,
                 calib_size: int = 1000, calib_batch_size: int = 100, holdout_size: int = 0, val_size: int = 0,
                 eval_split: str = "test", eval_batch_size: int = 100, num_workers: int | None = None, seed: int = 0) -> None:
        super().__init__()
        if model_name is None:
            raise DataError("data.model_name is not given: pass the model's name (evolq-pl sets it from "
                            "model.init_args.model_name)")
        img_size = 224 if img_size is None else img_size
        num_workers = min(8, os.cpu_count() or 1) if num_workers is None else num_workers
        self.set_split(calib_size, calib_batch_size, holdout_size, val_size, eval_split, seed, num_workers,
                       img_size=img_size, eval_batch_size=eval_batch_size)
        if (root is None) == (hf_dataset is None):
            raise DataError("give exactly one of data.root (image folder) or data.hf_dataset")
        if transform not in TRANSFORMS:
            raise DataError(f"transform={transform!r}: accepted: {', '.join(TRANSFORMS)}")
        self.eval_batch_size, self.model_name, self.img_size = eval_batch_size, model_name, img_size
        tf = paper_transform(model_name, img_size) if transform == "paper" else timm_transform(model_name)
        if root is not None:
            from torchvision.datasets import ImageFolder
            if not Path(root).is_dir():
                raise DataError(f"data.root={root!r} does not exist")
            self.num_classes = len(_check_folder(Path(root)))
            self.train, self.val = (ImageFolder(str(Path(root) / split), tf, loader=load_image) for split in ("train", "val"))
        else:
            train, val = _load_hf(hf_dataset, hf_train_split, hf_val_split)
            missing = [c for c in (image_column, label_column) if c not in train.column_names]
            if missing:
                raise DataError(f"dataset {hf_dataset!r} has no column(s) {missing}; columns: {train.column_names}")
            self.num_classes = getattr(train.features[label_column], "num_classes", None)  # a ClassLabel's
            self.train, self.val = (HFImages(split, tf, image_column, label_column) for split in (train, val))
        val_idx, rest = validation_split(len(self.train), val_size)
        # raises naming the sizes when calib_size + holdout_size > the train images outside the validation split
        calib_idx, holdout_idx = seeded_split(len(rest), calib_size, holdout_size, seed)
        self.calib_idx, self.holdout_idx = rest[calib_idx], rest[holdout_idx]
        self.evaluation = self.val if eval_split == "test" else Subset(self.train, val_idx.tolist())

    def _stack(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loader = DataLoader(Subset(self.train, idx.tolist()), batch_size=self.calib_batch_size,
                            num_workers=self.num_workers)
        xs, ys = zip(*loader)
        return torch.cat(xs), torch.cat(ys)

    def calibration_data(self) -> CalibrationData:
        if not hasattr(self, "_calib"):
            x, y = self._stack(self.calib_idx)
            hx, hy = self._stack(self.holdout_idx) if len(self.holdout_idx) else (None, None)
            self._calib = CalibrationData(x, y, self.calib_batch_size, hx, hy)
        return self._calib

    def eval_dataloader(self) -> DataLoader:
        return DataLoader(self.evaluation, batch_size=self.eval_batch_size, num_workers=self.num_workers)
