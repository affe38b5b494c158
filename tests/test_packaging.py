"""What a pip user gets: the wheel holds every package, the shipped configs and reference weights, and the demo
runs from a non-editable install in a fresh virtual environment, from another folder, by config name."""
import json
import subprocess
import sys
import venv
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--model.init_args.search.passes", "1", "--model.init_args.search.population", "4",
         "--model.init_args.search.tournament", "2", "--model.init_args.search.cycles", "1",
         "--data.init_args.calib_size", "100", "--data.init_args.eval_size", "200",
         "--trainer.enable_progress_bar", "false"]


def test_every_package_is_listed():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "evolq_pl").rglob("__init__.py")}
    assert listed == found | {"evolq_pl.configs"}


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, f"{' '.join(cmd)}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv (reusing this interpreter's site-packages for torch & co.) with the built wheel installed,
    not editable: its ``bin`` folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(ROOT), "-w",
         str(tmp / "dist")], tmp)
    venv.create(tmp / "venv", system_site_packages=True, with_pip=False)
    bin_dir = tmp / "venv" / "bin"
    wheel = next((tmp / "dist").glob("evolq_pl-*.whl"))
    run([sys.executable, "-m", "pip", "--python", str(bin_dir / "python"), "install", "-q", "--no-deps",
         str(wheel)], tmp)
    return bin_dir


def test_wheel_holds_configs_and_weights(installed, tmp_path):
    where = run([str(installed / "python"), "-c", "import evolq_pl; print(evolq_pl.__file__)"], tmp_path)
    assert "site-packages" in where.stdout and str(ROOT) not in where.stdout  # the wheel's copy, not the checkout
    names = run([str(installed / "evolq-pl"), "configs"], tmp_path).stdout
    assert {"demo", "fmnist/deit", "fmnist/levit", "imagenet/base", "presets/beyond_paper"} <= \
        {line.split()[0] for line in names.splitlines()}
    shown = run([str(installed / "evolq-pl"), "configs", "demo"], tmp_path).stdout
    assert shown == (ROOT / "configs" / "demo.yaml").read_text()


def test_demo_from_wheel_in_another_folder(installed, tmp_path, fashion_mnist_available):
    if not fashion_mnist_available:
        pytest.skip("dataset-fashion-mnist not installed (.ci/run installs it)")
    run([str(installed / "evolq-pl"), "fit", "--config", "demo", *SMALL, "--run_dir", "out"], tmp_path)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["model"] == "levit_128s" and results["calib_size"] == 100
    assert (tmp_path / "out" / "checkpoints" / "last.ckpt").is_file()
    assert not (ROOT / "runs" / "demo" / "out").exists()
