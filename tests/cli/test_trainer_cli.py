"""The CLI through real argv, on a tiny random-weight model and a small slice of Fashion-MNIST."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def tiny_config(tmp_path: Path) -> Path:
    cfg = {
        "seed_everything": 0,
        "trainer": {"max_epochs": 1, "accelerator": "cpu", "devices": 1, "default_root_dir": str(tmp_path),
                    "enable_progress_bar": False,
                    "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                   "init_args": {"dirpath": str(tmp_path / "ckpt"), "save_last": True}}]},
        "model": {"class_path": "evolq_pl.lightning.EvolQModule", "init_args": {
            "model_name": "deit_tiny_patch16_224",
            "model_kwargs": {"img_size": 28, "patch_size": 7, "in_chans": 1, "num_classes": 10, "embed_dim": 32,
                             "depth": 2, "num_heads": 2},
            "quant": {"w_bits": 4}, "search": {"passes": 1}, "output_dir": str(tmp_path / "out")}},
        "data": {"class_path": "evolq_pl.lightning.FashionMNISTDataModule",
                 "init_args": {"calib_size": 100, "eval_size": 300}},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "cli.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_fit_validate_print_config(tmp_path, fashion_mnist_available):
    if not fashion_mnist_available:
        pytest.skip("dataset-fashion-mnist not installed (.ci/run installs it)")
    config = tiny_config(tmp_path)
    fit = cli("fit", "--config", str(config))
    assert fit.returncode == 0, fit.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["evaluations"] == 2 * 3 and results["fitness_final"] <= results["fitness_init"]
    assert "calibrated init" in fit.stdout and "Evol-Q" in fit.stdout

    val = cli("validate", "--config", str(config), "--ckpt_path", str(tmp_path / "ckpt" / "last.ckpt"))
    assert val.returncode == 0, val.stderr[-3000:]
    # the searched checkpoint validates to the Evol-Q accuracy that fit reported
    top1 = float(re.search(r"val/top1\D*([0-9.]+)", val.stdout).group(1))
    assert top1 == pytest.approx(results["top1_evolq"], abs=1e-3)  # in percent, as fit gives it

    # resumed from its end-of-epoch checkpoint, the finished run skips the training loop yet writes its results
    (tmp_path / "out" / "results.json").unlink()
    resumed = cli("fit", "--config", str(config), "--ckpt_path", str(tmp_path / "ckpt" / "last.ckpt"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    again = json.loads((tmp_path / "out" / "results.json").read_text())
    assert again["top1_evolq"] == results["top1_evolq"] and again["evaluations"] == results["evaluations"]

    printed = cli("fit", "--config", str(config), "--print_config")
    assert printed.returncode == 0 and "model_name: deit_tiny_patch16_224" in printed.stdout


@pytest.mark.parametrize("args, error", [
    (("--model.init_args.search.loss", "l1"), "error: search.loss='l1': unknown; accepted: cosine, infonce, kl, mse"),
    (("--model.init_args.model_name", "resnet50"), "error: unknown model 'resnet50'; supported: vit_base_patch16_224, "),
])
def test_bad_config_fails_before_work(tmp_path, args, error):
    # (issue 25: this checked only the message) before work: one line, and nothing calibrated, searched or written:
    # fit's first steps write the logger's folder with config.yaml, then checkpoints and results.json
    config = tiny_config(tmp_path)
    bad = cli("fit", "--config", str(config), *args)
    assert bad.returncode == 2 and bad.stderr.splitlines()[-2].startswith(error), bad.stderr[-2000:]
    assert "Traceback" not in bad.stderr and "calibrated init" not in bad.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.yaml"]


def test_fit_into_a_finished_run_folder_is_refused_before_work(tmp_path):
    """(issue 28, defect 1: a second fit silently replaced results.json and wrote last-v1.ckpt)"""
    config = tiny_config(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text("{}")
    again = cli("fit", "--config", str(config), "--run_dir", str(tmp_path / "run"))
    assert again.returncode == 2
    assert again.stderr.splitlines()[-2] == (f"error: --run_dir={str(tmp_path / 'run')!r} holds a finished run "
                                            f"({tmp_path / 'run' / 'results.json'}): give another --run_dir, or "
                                            "pass --overwrite true to replace it")
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before any work


def test_a_model_of_fewer_classes_than_the_data_is_refused_before_calibration(tmp_path, fashion_mnist_available):
    """(issue 27, 2) Fashion-MNIST's 10 labels cannot be scored by a 5-class head: refused in one line before the
    trainer runs (no image read, no folder made)."""
    if not fashion_mnist_available:
        pytest.skip("dataset-fashion-mnist not installed (.ci/run installs it)")
    config = tiny_config(tmp_path)
    cfg = yaml.safe_load(config.read_text())
    cfg["model"]["init_args"]["model_kwargs"]["num_classes"] = 5
    config.write_text(yaml.safe_dump(cfg))
    bad = cli("fit", "--config", str(config))
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert bad.returncode == 2 and errors == [
        "error: data: FashionMNISTDataModule has 10 classes, the model predicts 5 "
        "(model.init_args.model_kwargs.num_classes); accepted: num_classes ≥ 10"], bad.stderr[-2000:]
    assert "Traceback" not in bad.stderr and "calibrated init" not in bad.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.yaml"]  # no log, checkpoint or results folder
