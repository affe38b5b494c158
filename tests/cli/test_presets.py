"""The shipped preset is the choice the accuracy benchmark made on the validation split (accuracy.json), and it
composes with any config as a second ``--config``, changing only its own search fields."""
import json
from dataclasses import asdict
from pathlib import Path

import pytest

from benchmarks.accuracy import VARIANTS
from evolq_pl.cli.restore import build

ROOT = Path(__file__).resolve().parents[2]
PRESET = "configs/presets/beyond_paper.yaml"


@pytest.mark.parametrize("config", ["configs/fmnist/deit.yaml", "configs/fmnist/levit.yaml"])
def test_preset_is_the_validation_choice_and_changes_only_its_fields(config, monkeypatch):
    monkeypatch.chdir(ROOT)
    chosen = json.loads((ROOT / "benchmarks/results/accuracy.json").read_text())["preset"]["preset"]
    paper = asdict(build([config], [], None)[0].search_cfg)
    preset = asdict(build([config, PRESET], [], None)[0].search_cfg)
    assert preset == {**paper, **VARIANTS[chosen]} and preset != paper
