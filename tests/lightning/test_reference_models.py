"""Shipped reference models: integrity, recorded accuracy, the demo config end to end, missing data."""
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from evolq_pl.lightning.fashion_mnist import DatasetNotFoundError, FashionMNISTDataModule, load_fashion_mnist
from evolq_pl.report.metrics import evaluate
from evolq_pl.report.stats import unpack_bits
from evolq_pl.models import CheckpointError, create_float_model
from evolq_pl.models.reference import REFERENCE_DIR, reference_model, reference_models

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["deit_fmnist", "levit_fmnist"])
def test_shipped_checkpoint_is_the_recorded_file_with_the_recorded_accuracy(name, fashion_mnist_available):
    # (issue 25: the recorded test accuracy was checked against a threshold, itself a record) recomputed here:
    # the file's sha256 and size, and top-1 on the 10,000 test images and on their first 2,000 (counted from the
    # per-image correctness), each within a few images of what the manifest records
    if not fashion_mnist_available:
        pytest.skip("dataset-fashion-mnist not installed (.ci/run installs it)")
    ref = reference_model(name)
    data = Path(ref["path"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == ref["sha256"] and len(data) == ref["size_bytes"] <= 5 * 2**20
    model = create_float_model(ref["model_name"], checkpoint_path=ref["path"], **ref["model_kwargs"])
    dm = FashionMNISTDataModule(image_size=ref["image_size"], batch_size=500)
    dm.setup()
    measured = evaluate(model, dm.eval_dataloader(), 10)
    correct = unpack_bits(measured["correct"], measured["images"])
    assert measured["images"] == len(correct) == 10_000
    assert 100 * sum(correct) / 10_000 == pytest.approx(ref["top1_test"], abs=0.05)  # 5 images
    assert 100 * sum(correct[:2000]) / 2000 == pytest.approx(ref["top1_subset2000"], abs=0.1)  # 2 images
    assert measured["top1"] >= 88.0  # the target for both reference models, measured


def test_corrupt_checkpoint_refused(tmp_path):
    ref = reference_model("levit_fmnist")
    bad = tmp_path / "bad.pt"
    data = bytearray(Path(ref["path"]).read_bytes())
    data[-100] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256 .* expected cf20a26c"):
        create_float_model(ref["model_name"], checkpoint_path=str(bad), checkpoint_sha256=ref["sha256"],
                           **ref["model_kwargs"])
    with pytest.raises(CheckpointError, match="does not match the model"):
        create_float_model("deit_tiny_patch16_224", checkpoint_path=ref["path"], img_size=28, in_chans=1)
    with pytest.raises(CheckpointError, match="does not exist"):
        create_float_model("deit_tiny_patch16_224", checkpoint_path=str(tmp_path / "none.pt"))


def test_manifest_lists_exactly_the_shipped_files():
    shipped = sorted(p.name for p in REFERENCE_DIR.glob("*.pt"))
    assert sorted(m["file"] for m in reference_models().values()) == shipped == ["deit_fmnist.pt", "levit_fmnist.pt"]
    assert all((ROOT / m["config"]).is_file() for m in reference_models().values())  # how each was trained
    with pytest.raises(ValueError, match="unknown reference model 'x'"):
        reference_model("x")


def test_missing_dataset_offline_error(tmp_path, monkeypatch):
    from torchvision.datasets import FashionMNIST

    def offline(self):
        raise OSError("network is unreachable")

    monkeypatch.setattr(FashionMNIST, "download", offline)
    with pytest.raises(DatasetNotFoundError, match=r"(?s)not found in .*nowhere.*apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "cache", debian_dir=tmp_path / "nowhere")


def test_demo_config_end_to_end_reduced(tmp_path, fashion_mnist_available):
    if not fashion_mnist_available:
        pytest.skip("dataset-fashion-mnist not installed (.ci/run installs it)")
    out = subprocess.run(
        [sys.executable, "cli.py", "fit", "--config", "configs/demo.yaml", "--model.init_args.search.passes", "1",
         "--data.init_args.calib_size", "200", "--data.init_args.eval_size", "1000",
         "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false", "--trainer.callbacks", "[]",
         "--trainer.enable_checkpointing", "false", "--model.init_args.output_dir", str(tmp_path / "out")],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "calibrated init" in out.stdout and (tmp_path / "out" / "results.json").exists()
