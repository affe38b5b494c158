"""ImageNet path on generated data: folder and HF sources, bad layouts, every config builds."""
import os
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from evolq_pl.errors import EvolQError
from evolq_pl.lightning.imagenet import DataError, HFImages, ImageNetDataModule

ROOT = Path(__file__).resolve().parents[2]


def imagenet(**kwargs) -> ImageNetDataModule:
    return ImageNetDataModule(model_name="deit_tiny_patch16_224", **kwargs)


def make_folder(root: Path, classes=("a", "b", "c"), per_class: int = 4, splits=("train", "val")) -> Path:
    g = torch.Generator().manual_seed(0)
    for split in splits:
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = (torch.rand(40, 48, 3, generator=g) * 255).to(torch.uint8).numpy()
                Image.fromarray(pixels).save(root / split / c / f"{i}.png")
    return root


def test_folder_and_hf_give_same_calibration_images(tmp_path):
    import datasets
    root = make_folder(tmp_path / "imgs")
    folder = imagenet(root=str(root), calib_size=5, calib_batch_size=2, num_workers=0, img_size=32, seed=3)
    # the same images as a saved Hugging Face dataset, in ImageFolder order
    samples = folder.train.samples
    splits = {name: datasets.Dataset.from_dict({"image": [p for p, _ in s], "label": [y for _, y in s]})
              for name, s in (("train", samples), ("validation", folder.val.samples))}
    for ds in splits.values():
        ds = ds.cast_column("image", datasets.Image())
    hf_path = tmp_path / "hf"
    datasets.DatasetDict({k: v.cast_column("image", datasets.Image()) for k, v in splits.items()}).save_to_disk(str(hf_path))
    hf = imagenet(hf_dataset=str(hf_path), calib_size=5, calib_batch_size=2, num_workers=0, img_size=32, seed=3)
    a, b = folder.calibration_data(), hf.calibration_data()
    assert a.images.shape == (5, 3, 32, 32)
    torch.testing.assert_close(a.images, b.images)
    assert torch.equal(a.labels, b.labels)
    other = imagenet(root=str(root), calib_size=5, calib_batch_size=2, num_workers=0, img_size=32, seed=4)
    assert not torch.equal(other.calibration_data().images, a.images)

    # (issue 27, 7) the shipped base config takes a Hugging Face source as given (it names no image folder),
    # and its loaders use one worker per core, at most 8
    from evolq_pl.cli.trainer_cli import EvolQCLI
    cli = EvolQCLI(args=["--config", str(ROOT / "configs/imagenet/base.yaml"), "--config",
                         str(ROOT / "configs/imagenet/deit_tiny_w4a8.yaml"), "--model.init_args.pretrained", "false",
                         "--data.init_args.hf_dataset", str(hf_path), "--data.init_args.calib_size", "2"], run=False)
    assert isinstance(cli.datamodule.train, HFImages)
    assert cli.datamodule.num_workers == min(8, os.cpu_count())


def test_the_data_names_its_class_count_and_refuses_labels_the_model_cannot_predict(tmp_path):
    """(issue 27, 2) the class count is checked before any image is read: more data classes than model outputs is
    refused in one line naming both; fewer are read as the model's first classes, with a warning."""
    import datasets
    folder = imagenet(root=str(make_folder(tmp_path / "imgs")), calib_size=2, num_workers=0)
    assert folder.num_classes == 3
    with pytest.raises(EvolQError) as err:
        folder.check_classes(2)
    assert str(err.value) == ("data: ImageNetDataModule has 3 classes, the model predicts 2 "
                              "(model.init_args.model_kwargs.num_classes); accepted: num_classes ≥ 3")
    with pytest.warns(UserWarning, match="has 3 classes, the model predicts 1000: label i is read as"):
        folder.check_classes(1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        folder.check_classes(3)
    # a Hugging Face label column names its classes when it is a ClassLabel, and nothing is assumed otherwise
    ds = datasets.Dataset.from_dict({"image": [s for s, _ in folder.train.samples], "label": [0, 1, 2, 3] * 3})
    plain = ds.cast_column("image", datasets.Image())
    labelled = plain.cast_column("label", datasets.ClassLabel(num_classes=4))
    for data, expected in ((plain, None), (labelled, 4)):
        datasets.DatasetDict({"train": data, "validation": data}).save_to_disk(str(tmp_path / f"hf{expected}"))
        assert imagenet(hf_dataset=str(tmp_path / f"hf{expected}"), calib_size=2, num_workers=0).num_classes == expected


def test_bad_layouts_named(tmp_path):
    with pytest.raises(DataError, match="no 'val/' directory"):
        imagenet(root=str(make_folder(tmp_path / "t", splits=("train",))), num_workers=0)
    empty = tmp_path / "e"
    (empty / "train" / "a").mkdir(parents=True)
    (empty / "val" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match="no images"):
        imagenet(root=str(empty), num_workers=0)
    one_empty = make_folder(tmp_path / "o", classes=("a", "b"))
    for f in (one_empty / "val" / "b").iterdir():
        f.unlink()
    with pytest.raises(DataError, match=f"class folder {one_empty / 'val' / 'b'} has no images"):
        imagenet(root=str(one_empty), num_workers=0)
    diff = make_folder(tmp_path / "d", classes=("a", "b"))
    (diff / "val" / "b").rename(diff / "val" / "z")
    with pytest.raises(DataError, match="class folders differ.*only in train \\['b'\\].*only in val \\['z'\\]"):
        imagenet(root=str(diff), num_workers=0)
    with pytest.raises(ValueError, match="calib_size \\+ holdout_size = 1000 exceeds the 12 train images"):
        imagenet(root=str(make_folder(tmp_path / "s")), num_workers=0)
    with pytest.raises(DataError, match="does not exist"):
        imagenet(root=str(tmp_path / "missing"), num_workers=0)


def test_upper_case_nested_and_corrupt_images(tmp_path):
    root = make_folder(tmp_path / "u", per_class=2)
    for split in ("train", "val"):
        for c in ("a", "b", "c"):
            nested = root / split / c / "sub"
            nested.mkdir()
            for f in list((root / split / c).glob("*.png")):
                f.rename(nested / f.name.replace(".png", ".PNG"))
    dm = imagenet(root=str(root), calib_size=4, calib_batch_size=2, num_workers=0, img_size=32)
    assert dm.calibration_data().images.shape == (4, 3, 32, 32)
    bad = root / "val" / "a" / "sub" / "0.PNG"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated: found only when the evaluation reads it
    with pytest.raises(DataError, match=f"cannot read image {bad}"):
        list(dm.eval_dataloader())


def test_hf_missing_column_named(tmp_path):
    import datasets
    ds = datasets.Dataset.from_dict({"img": ["x"], "label": [0]})
    datasets.DatasetDict({"train": ds, "validation": ds}).save_to_disk(str(tmp_path / "hf"))
    with pytest.raises(DataError, match="no column\\(s\\) \\['image'\\]"):
        imagenet(hf_dataset=str(tmp_path / "hf"), num_workers=0)


@pytest.mark.parametrize("config", sorted(p.name for p in (ROOT / "configs" / "imagenet").glob("*_w*a8.yaml")))
def test_every_imagenet_config_builds(config, tmp_path):
    from evolq_pl.cli.trainer_cli import EvolQCLI
    root = make_folder(tmp_path / "imgs", per_class=1)
    cli = EvolQCLI(args=["--config", str(ROOT / "configs/imagenet/base.yaml"), "--config",
                         str(ROOT / "configs/imagenet" / config), "--model.init_args.pretrained", "false",
                         "--data.init_args.root", str(root), "--data.init_args.calib_size", "2"], run=False)
    name = config.split("_w")[0]
    assert cli.model.model_name.startswith(name) and cli.model.quant_cfg.w_bits == int(config.split("_w")[1][0])
    assert cli.datamodule.model_name == cli.model.model_name  # the transform follows the model, named once
    # attention blocks (+ LeViT's two subsampling attentions): ViT-L 24, ViT-B/DeiT 12, LeViT-128S 9 + 2, other
    # LeViTs 12 + 2, Swin-T 2+2+6+2, Swin-S/B 2+2+18+2
    expected = {"levit_128s": 11, "vit_large": 24, "swin_tiny": 12, "swin_small": 24, "swin_base": 24}
    assert len(cli.model.search_run.units) == expected.get(name, 14 if name.startswith("levit") else 12)


def test_validation_split_is_disjoint_from_calibration_and_evaluated_on_request(tmp_path):
    root = make_folder(tmp_path / "imgs", per_class=6)  # 18 train images
    kw = dict(root=str(root), calib_size=4, holdout_size=2, calib_batch_size=2, num_workers=0, img_size=32)
    dms = [imagenet(**kw, val_size=6, eval_split="val", seed=s) for s in (0, 1)]
    val = [set(dm.evaluation.indices) for dm in dms]
    assert val[0] == val[1] and len(val[0]) == 6  # the same validation images for every seed
    for dm in dms:
        assert not (set(dm.calib_idx.tolist()) | set(dm.holdout_idx.tolist())) & val[0]
        assert sum(len(y) for _, y in dm.eval_dataloader()) == 6
    test = imagenet(**kw, seed=0)
    assert sum(len(y) for _, y in test.eval_dataloader()) == 18  # the val/ folder (the paper's test set)
    # what results.json's ``eval_split``/``val_size`` and the printed table's "(val split …)" read: ImageNet kept
    # neither, so a run evaluated on the validation split was labelled "test" (found in issue 25's clean-up)
    assert [(dm.eval_split, dm.val_size) for dm in (*dms, test)] == [("val", 6), ("val", 6), ("test", 0)]
    with pytest.raises(ValueError, match="eval_split='val' with val_size=0"):
        imagenet(**kw, eval_split="val")


@pytest.mark.parametrize("field, value, minimum", [("calib_size", 0, 1), ("calib_batch_size", -1, 1),
                                                   ("eval_batch_size", 0, 1), ("img_size", 0, 1),
                                                   ("holdout_size", -1, 0), ("val_size", -2, 0), ("num_workers", -1, 0)])
def test_sizes_out_of_range_are_refused_before_any_image_is_read(field, value, minimum):
    """(issue 28, defect 5: the same one-line check as Fashion-MNIST's; no folder is looked at)"""
    with pytest.raises(ValueError, match=rf"^data.init_args.{field}={value}: must be ≥ {minimum}$"):
        imagenet(root="/nonexistent", **{field: value})


def test_data_follows_the_model_named_once(tmp_path):
    """(issue 27, 2: ``--model.init_args.model_name vit_base_patch16_224`` left the data on DeiT's transform)"""
    from evolq_pl.cli.trainer_cli import EvolQCLI
    root = make_folder(tmp_path / "imgs", per_class=1)
    args = ["--config", str(ROOT / "configs/imagenet/base.yaml"), "--config",
            str(ROOT / "configs/imagenet/deit_small_w4a8.yaml"), "--model.init_args.pretrained", "false",
            "--data.init_args.root", str(root), "--data.init_args.calib_size", "2"]
    cli = EvolQCLI(args=[*args, "--model.init_args.model_name", "vit_base_patch16_224"], run=False)
    assert cli.datamodule.model_name == "vit_base_patch16_224"
    with pytest.raises(ValueError, match=r"^data.init_args.model_name='levit_128s' differs from "
                                         r"model.init_args.model_name='deit_small_patch16_224': give it once"):
        EvolQCLI(args=[*args, "--data.init_args.model_name", "levit_128s"], run=False)
    with pytest.raises(DataError, match="data.model_name is not given"):
        ImageNetDataModule(root=str(root), num_workers=0)


@pytest.mark.parametrize("model_name, size", [("vit_base_patch16_224", 224), ("deit_small_patch16_224", 224),
                                              ("levit_128s", 160), ("swin_tiny_patch4_window7_224", 224)])
def test_paper_transform_by_hand(model_name, size):
    """The paper's eval preprocessing (reference §7), written out: shorter side to ⌊size / crop_pct⌋ bicubic,
    center crop, the family's mean/std; timm's create_transform is asked for exactly that."""
    from torchvision import transforms as T

    from evolq_pl.lightning.imagenet import PAPER_TRANSFORMS, paper_transform
    mean, std, crop_pct = PAPER_TRANSFORMS[model_name.split("_")[0]]
    by_hand = T.Compose([T.Resize(int(size / crop_pct), interpolation=T.InterpolationMode.BICUBIC),
                         T.CenterCrop(size), T.ToTensor(), T.Normalize(mean, std)])
    g = torch.Generator().manual_seed(1)
    image = Image.fromarray((torch.rand(300, 411, 3, generator=g) * 255).to(torch.uint8).numpy())
    assert torch.equal(paper_transform(model_name, size)(image), by_hand(image))
