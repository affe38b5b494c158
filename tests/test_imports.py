"""DESIGN §1: imports go one way only (quant ← layers ← models ← search ← export ← lightning ← cli).

Checked on the source of every module (imports inside functions included), then by importing every module.
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "evolq_pl"
ORDER = ["quant", "layers", "models", "search", "export", "lightning", "cli"]
NO_THIRD_PARTY = {"quant": {"timm", "lightning"}, "layers": {"timm", "lightning"}, "models": {"lightning"},
                  "search": {"lightning"}, "export": {"lightning"}}
SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE)  # every subpackage module


def imported(source: str, package: str) -> set[str]:
    """Every module name ``source`` (a module of ``package``) imports, anywhere in it (relative imports resolved)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            names.add(f"{base}.{node.module}".strip(".") if node.module else base)
    return names


def violations(path: Path, source: str | None = None) -> list[str]:
    layer = path.relative_to(PACKAGE).parts[0]
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    bad = []
    for name in imported(path.read_text() if source is None else source, package):
        parts = name.split(".")
        if parts[0] == "evolq_pl" and len(parts) > 1 and parts[1] in ORDER and ORDER.index(parts[1]) > ORDER.index(layer):
            bad.append(name)
        if parts[0] in NO_THIRD_PARTY.get(layer, ()):
            bad.append(name)
    return bad


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_import_direction(path):
    assert violations(path) == [], f"{path.relative_to(PACKAGE)} imports upward: {violations(path)}"


def test_the_check_sees_imports_inside_functions():
    source = "def f():\n    from ..lightning import evolq\n    import lightning\n    from evolq_pl.quant import calibrate\n"
    assert sorted(violations(PACKAGE / "search" / "probe.py", source)) == ["evolq_pl.lightning", "lightning"]


def test_every_module_imports():
    modules = [".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts) for p in SOURCES]
    modules = [m.removesuffix(".__init__") for m in modules]
    code = "import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
