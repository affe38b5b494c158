"""DESIGN §1: imports go one way only (quant ← layers ← models ← search ← lightning ← cli)."""
import subprocess
import sys

import pytest

FORBIDDEN = {
    "evolq_pl.quant": ["timm", "lightning", "evolq_pl.layers", "evolq_pl.models"],
    "evolq_pl.layers": ["timm", "lightning", "evolq_pl.models"],
    "evolq_pl.models": ["lightning", "evolq_pl.search", "evolq_pl.lightning"],
    "evolq_pl.search": ["lightning", "evolq_pl.lightning"],
}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_import_direction(package):
    code = (f"import sys, {package}; bad = [m for m in {FORBIDDEN[package]!r} if m in sys.modules]; "
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"importing {package} pulled in {out}"
