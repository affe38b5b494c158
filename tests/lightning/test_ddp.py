"""DDP on 2 CPU processes (gloo) ends with the same scales as 1 process."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from evolq_pl.lightning.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def fit(tmp: Path, *extra: str) -> dict:
    args = [sys.executable, "cli.py", "fit", "--config", "configs/demo.yaml", "--model.init_args.search.passes", "1",
            "--model.init_args.quant.w_bits", "3", "--data.init_args.calib_size", "200",
            "--data.init_args.eval_size", "500", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
            "--trainer.default_root_dir", str(tmp), "--trainer.callbacks.init_args.dirpath", str(tmp / "ckpt"),
            "--model.init_args.output_dir", str(tmp / "out"), "--trainer.accelerator", "cpu", *extra]
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads((tmp / "out" / "results.json").read_text())


def test_ddp_two_processes_match_one(tmp_path, fashion_mnist_available):
    if not fashion_mnist_available:
        pytest.skip("dataset-fashion-mnist not installed (.ci/run installs it)")
    one = fit(tmp_path / "one")
    two = fit(tmp_path / "two", "--trainer.strategy", "ddp", "--trainer.devices", "2")
    assert one["fitness_final"] < one["fitness_init"]  # the search moved, so equality is meaningful
    assert two["fitness_final"] == pytest.approx(one["fitness_final"], rel=1e-6)
    a = load_checkpoint(tmp_path / "one" / "ckpt" / "last.ckpt")["state_dict"]
    b = load_checkpoint(tmp_path / "two" / "ckpt" / "last.ckpt")["state_dict"]
    scales = [k for k in a if k.endswith(".scale")]
    assert scales and all(torch.equal(a[k], b[k]) for k in scales)
