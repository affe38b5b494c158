"""Shipped configs by name: ``--config demo`` is configs/demo.yaml; a file path is that file; anything else one
line with the close names."""
import pytest

from evolq_pl.cli.configs import ConfigNotFound, configs_dir, resolve_config, resolve_config_args, shipped_configs
from tests.cli.test_trainer_cli import ROOT


def test_names_are_the_files_under_configs():
    shipped = shipped_configs()
    assert configs_dir() == ROOT / "configs"  # a checkout (or an editable install) reads its own folder
    assert shipped["demo"] == ROOT / "configs" / "demo.yaml"
    assert shipped["imagenet/deit_small_w4a8"] == ROOT / "configs" / "imagenet" / "deit_small_w4a8.yaml"
    assert {"fmnist/deit", "fmnist/levit", "presets/beyond_paper", "reference/deit_fmnist", "reference/levit_fmnist",
            "imagenet/base", "imagenet/vit_large_w3a8", "imagenet/swin_base_w8a8"} <= set(shipped)
    assert len([n for n in shipped if n.startswith("imagenet/") and n != "imagenet/base"]) == 13 * 3  # models × bits


@pytest.mark.parametrize("value", ["demo", "configs/demo.yaml", "demo.yaml", "configs/demo"])
def test_a_name_resolves_to_the_shipped_file(value, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # from another folder, where configs/demo.yaml is not a file
    assert resolve_config(value) == str(ROOT / "configs" / "demo.yaml")


def test_an_existing_file_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").write_text("seed_everything: 3\n")
    assert resolve_config("demo") == "demo"


def test_unknown_name_names_close_matches(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigNotFound, match=r"--config='fmnist/dei' is neither a file nor a shipped config; "
                                             r"did you mean fmnist/deit"):
        resolve_config("fmnist/dei")


def test_every_config_argument_is_resolved(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    demo, deit = str(ROOT / "configs" / "demo.yaml"), str(ROOT / "configs" / "fmnist" / "deit.yaml")
    argv = ["fit", "--config", "demo", "--config=fmnist/deit", "--model.init_args.note", "demo", "-c", "demo",
            "--", "--config", "demo"]
    assert resolve_config_args(argv) == ["fit", "--config", demo, f"--config={deit}", "--model.init_args.note",
                                         "demo", "-c", demo, "--", "--config", demo]
