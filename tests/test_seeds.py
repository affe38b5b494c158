"""The seeds command aggregates per-seed results (two seeds on CPU, tiny model)."""
import json
import subprocess
import sys

import pytest

from evolq_pl.cli.seeds import summarise
from tests.test_cli import ROOT, tiny_config


def test_summarise_by_hand(tmp_path):
    for seed, top1 in ((0, 80.0), (1, 82.0)):
        (tmp_path / f"seed{seed}").mkdir()
        (tmp_path / f"seed{seed}" / "results.json").write_text(json.dumps(
            {"model": "m", "w_bits": 4, "a_bits": 8, "top1_evolq": top1, "fitness_init": 2.0}))
    rows = {r["metric"]: r for r in summarise(tmp_path, [0, 1])["rows"]}
    assert rows["top1_evolq"]["mean"] == 81.0 and rows["top1_evolq"]["std"] == pytest.approx(2**0.5)
    assert "| top1_evolq | 81 ± 1.4 | 80 | 82 |" in (tmp_path / "summary.md").read_text()
    assert (tmp_path / "summary.csv").read_text().startswith("metric,mean,std,seed0,seed1")


def test_seeds_command_two_seeds_cpu(tmp_path, fashion_mnist_available):
    if not fashion_mnist_available:
        pytest.skip("dataset-fashion-mnist not installed (.ci/run installs it)")
    config = tiny_config(tmp_path)
    out = subprocess.run([sys.executable, "cli.py", "seeds", "--config", str(config), "--seeds", "0", "1",
                          "--out", str(tmp_path / "seeds"), "--", "--trainer.callbacks", "[]",
                          "--trainer.enable_checkpointing", "false"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = [json.loads((tmp_path / "seeds" / f"seed{s}" / "results.json").read_text()) for s in (0, 1)]
    assert [r["seed"] for r in runs] == [0, 1]
    assert "top1_evolq" in (tmp_path / "seeds" / "summary.md").read_text()
