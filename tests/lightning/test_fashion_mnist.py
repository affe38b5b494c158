"""The Fashion-MNIST DataModule's splits: a fixed validation split, disjoint from calibration, held-out and
classifier-training images (checked on a small fake dataset whose pixels name the image index)."""
import pytest
import torch

from evolq_pl.lightning import fashion_mnist
from evolq_pl.lightning.calibration import validation_split
from evolq_pl.lightning.fashion_mnist import MEAN, STD, FashionMNISTDataModule


@pytest.fixture
def fake(monkeypatch):
    n = 200  # train image i has every pixel = i (uint8), label i % 10; test images 200 + j
    raw = {"train_x": torch.arange(n).view(n, 1, 1).expand(n, 28, 28).to(torch.uint8),
           "train_y": torch.arange(n) % 10,
           "test_x": torch.full((20, 28, 28), 250, dtype=torch.uint8), "test_y": torch.zeros(20, dtype=torch.long)}
    monkeypatch.setattr(fashion_mnist, "load_fashion_mnist", lambda root=None: raw)


def index_of(x: torch.Tensor) -> set[int]:
    """Image indices back from normalized pixels."""
    return set(torch.round((x[:, 0, 0, 0] * STD + MEAN) * 255).long().tolist())


def test_validation_split_is_fixed_across_seeds_and_disjoint(fake):
    dms = [FashionMNISTDataModule(calib_size=40, holdout_size=20, val_size=50, eval_split="val", seed=s) for s in (0, 1)]
    vals = [index_of(torch.cat([x for x, _ in dm.eval_dataloader()])) for dm in dms]
    assert vals[0] == vals[1] and len(vals[0]) == 50  # the same validation images for every seed
    for dm in dms:
        c = dm.calibration_data()
        calib, held = index_of(c.images), index_of(c.holdout_images)
        train = index_of(dm._data["train_x"])
        assert len(calib) == 40 and len(held) == 20 and len(train) == 150
        assert not (calib | held) & vals[0] and not train & vals[0]  # never a validation image
    assert index_of(dms[0].calibration_data().images) != index_of(dms[1].calibration_data().images)


def test_no_validation_split_keeps_the_earlier_calibration_images(fake):
    assert torch.equal(validation_split(200, 0)[1], torch.arange(200))
    dm = FashionMNISTDataModule(calib_size=40, seed=3)
    perm = torch.randperm(200, generator=torch.Generator().manual_seed(3))[:40]  # the split before val_size existed
    assert index_of(dm.calibration_data().images) == set(perm.tolist())
    assert index_of(torch.cat([x for x, _ in dm.eval_dataloader()])) == {250}  # the test images


@pytest.mark.parametrize("kw, match", [(dict(eval_split="val"), "eval_split='val' with val_size=0"),
                                       (dict(eval_split="train", val_size=10), "accepted: 'test', or 'val'")])
def test_bad_eval_split_is_refused_naming_it(kw, match):
    with pytest.raises(ValueError, match=match):
        FashionMNISTDataModule(**kw)


@pytest.mark.parametrize("field, value, minimum", [("eval_size", -5, 1), ("eval_size", 0, 1), ("calib_size", 0, 1),
                                                   ("batch_size", -1, 1), ("calib_batch_size", 0, 1),
                                                   ("holdout_size", -1, 0), ("val_size", -1, 0), ("num_workers", -1, 0)])
def test_sizes_out_of_range_are_refused_before_any_data_is_read(field, value, minimum):
    """(issue 28, defect 5: eval_size -5 evaluated 9,995 images)"""
    with pytest.raises(ValueError, match=rf"^data.init_args.{field}={value}: must be ≥ {minimum}$"):
        FashionMNISTDataModule(**{field: value})
