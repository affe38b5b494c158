"""DESIGN §1: imports go one way only (quant ← layers ← models ← search ← lightning ← cli)."""
import subprocess
import sys

import pytest

FORBIDDEN = {
    "evolq_pl.quant": ["timm", "lightning", "evolq_pl.layers", "evolq_pl.models"],
    "evolq_pl.layers": ["timm", "lightning", "evolq_pl.models"],
    "evolq_pl.models": ["lightning", "evolq_pl.search", "evolq_pl.lightning"],
    "evolq_pl.search": ["lightning", "evolq_pl.lightning"],
    "evolq_pl.export": ["lightning", "evolq_pl.lightning", "evolq_pl.cli"],
    "evolq_pl.lightning": ["evolq_pl.cli"],  # nothing below the command line imports it
}
# every module, including those only imported inside functions (the CLI's commands)
MODULES = ["evolq_pl.cli", "evolq_pl.cli.trainer_cli", "evolq_pl.cli.restore", "evolq_pl.cli.export",
           "evolq_pl.cli.landscape", "evolq_pl.cli.seeds", "evolq_pl.export.safetensors_io", "evolq_pl.export.onnx_io",
           "evolq_pl.lightning", "evolq_pl.lightning.imagenet", "evolq_pl.lightning.fashion_mnist"]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_import_direction(package):
    code = (f"import sys, {package}; bad = [m for m in {FORBIDDEN[package]!r} if m in sys.modules]; "
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"importing {package} pulled in {out}"


def test_every_module_imports():
    code = "import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in MODULES)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
