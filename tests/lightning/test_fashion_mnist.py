"""The Fashion-MNIST DataModule's splits: a fixed validation split, disjoint from calibration, held-out and
classifier-training images (checked on a small fake dataset whose pixels name the image index); a damaged cache."""
import gzip
import re

import pytest
import torch

from evolq_pl.lightning import fashion_mnist
from evolq_pl.search.calibration import validation_split
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


@pytest.fixture
def no_download(monkeypatch):
    class Offline:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("no network")

    monkeypatch.setattr("torchvision.datasets.FashionMNIST", Offline)


def test_damaged_cache_without_a_source_is_named_as_damaged(tmp_path, no_download):
    """(issue 28, defect 8: a damaged cache was reported as "not found … and the download failed")"""
    raw = tmp_path / "cache" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    bad = raw / "train-labels-idx1-ubyte"
    bad.write_bytes(b"garbage")
    with pytest.warns(RuntimeWarning, match=f"cache file {re.escape(str(bad))} .* is damaged; rebuilding it"), \
            pytest.raises(fashion_mnist.DatasetDamagedError,
                          match=rf"^Fashion-MNIST cache file {re.escape(str(bad))} \(not a uint8 idx file of shape "
                                r"\(60000,\): header 67617262616765\) is damaged and could not be rebuilt: Debian's "
                                r"package is not in .*nowhere and the download failed \(RuntimeError: no network\)"):
        fashion_mnist.load_fashion_mnist(tmp_path / "cache", debian_dir=tmp_path / "nowhere")


@pytest.mark.parametrize("content, why", [(b"garbage", "Not a gzipped file"),
                                          (gzip.compress(bytes(range(256)) * 64)[:200], "Compressed file ended"),
                                          (gzip.compress(b"hello"), "decompressed: not a uint8 idx file")],
                         ids=["not-gzip", "truncated", "not-idx"])
def test_damaged_debian_file_is_named_and_leaves_no_partial_copy(tmp_path, content, why):
    debian = tmp_path / "debian"
    debian.mkdir()
    for name in fashion_mnist.IDX_SHAPES:
        (debian / f"{name}.gz").write_bytes(content)
    first = debian / "train-images-idx3-ubyte.gz"
    with pytest.raises(fashion_mnist.DatasetDamagedError, match=rf"^{re.escape(str(first))} is damaged \({why}.*"
                                                                r"apt-get install --reinstall dataset-fashion-mnist$"):
        fashion_mnist.load_fashion_mnist(tmp_path / "cache", debian_dir=debian)
    assert list((tmp_path / "cache" / "FashionMNIST" / "raw").iterdir()) == []


def test_damaged_cache_is_rebuilt_from_debian(tmp_path, fashion_mnist_available):
    if not fashion_mnist_available:
        pytest.skip("dataset-fashion-mnist not installed (.ci/run installs it)")
    first = fashion_mnist.load_fashion_mnist(tmp_path)  # decompressed from Debian's package into the cache
    raw = tmp_path / "FashionMNIST" / "raw"
    truncated = raw / "t10k-labels-idx1-ubyte"
    truncated.write_bytes(truncated.read_bytes()[:100])
    with pytest.warns(RuntimeWarning, match=rf"{re.escape(str(truncated))} \(100 bytes, expected 10,008\) is damaged"):
        again = fashion_mnist.load_fashion_mnist(tmp_path)
    assert all(torch.equal(first[k], again[k]) for k in first) and truncated.stat().st_size == 10_008
