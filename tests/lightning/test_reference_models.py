"""Shipped reference models: integrity, recorded accuracy, the demo config end to end, missing data."""
import subprocess
import sys
from pathlib import Path

import pytest

from evolq_pl.lightning.fashion_mnist import DatasetNotFoundError, FashionMNISTDataModule, load_fashion_mnist
from evolq_pl.report.metrics import evaluate
from evolq_pl.models import CheckpointError, create_float_model
from evolq_pl.models.reference import reference_model, reference_models

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["deit_fmnist", "levit_fmnist"])
def test_shipped_checkpoint_accuracy_matches_record(name, fashion_mnist_available):
    if not fashion_mnist_available:
        pytest.skip("dataset-fashion-mnist not installed (.ci/run installs it)")
    ref = reference_model(name)
    assert Path(ref["path"]).stat().st_size <= 5 * 2**20
    model = create_float_model(ref["model_name"], checkpoint_path=ref["path"], checkpoint_sha256=ref["sha256"],
                               **ref["model_kwargs"])
    dm = FashionMNISTDataModule(image_size=ref["image_size"], batch_size=500, eval_size=2000)
    dm.setup()
    top1 = evaluate(model, dm.eval_dataloader(), 10)["top1"]
    assert top1 == pytest.approx(ref["top1_subset2000"], abs=0.5)
    assert ref["top1_test"] >= 88.0  # the target for both reference models


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


def test_manifest_lists_both_models():
    assert {"deit_fmnist", "levit_fmnist"} <= set(reference_models())
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
