"""DESIGN §1: imports go one way only (quant ← layers ← models ← search ← export ← report ← lightning ← cli), and
no two files import each other, directly or through others (in evolq_pl/ and in benchmarks/, which never
imports tests/).

Checked on the source of every module (imports inside functions and under TYPE_CHECKING included), then by
importing every module.
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "evolq_pl"
ORDER = ["quant", "layers", "models", "search", "export", "report", "lightning", "cli"]
NO_THIRD_PARTY = {"quant": {"timm", "lightning"}, "layers": {"timm", "lightning"}, "models": {"lightning"},
                  "search": {"lightning"}, "export": {"lightning"}, "report": {"lightning"}}
BENCHMARKS = PACKAGE.parent / "benchmarks"
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


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def dynamic_import(call: ast.Call) -> tuple[str, bool] | None:
    """``importlib.import_module("a.b")`` → ("a.b", True); ``import_module(f"a.{x}")`` → ("a.", False): every module
    under the prefix counts as imported; None for any other call (or a name not written in the call)."""
    func = call.func
    if (func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)) != "import_module" or not call.args:
        return None
    arg = call.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value, True
    if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
        return arg.values[0].value, False
    return None


def import_graph(files: list[Path]) -> dict[str, set[str]]:
    """Module → the modules of ``files`` it imports (``from a.b import c`` counts as a.b.c where that is a module,
    else a.b); every import statement counts, wherever it stands."""
    names = {module_name(f): f for f in files}

    def owner(imp: str) -> str:
        while imp and imp not in names:
            imp = imp.rpartition(".")[0]
        return imp

    graph = {}
    for name, f in names.items():
        package = name if f.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                targets |= {owner(a.name) for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = package.rsplit(".", node.level - 1)[0] if node.level else ""
                module = f"{base}.{node.module}".strip(".") if node.module else base
                targets |= {owner(f"{module}.{a.name}") for a in node.names}  # a submodule, else the module
            elif isinstance(node, ast.Call) and dynamic_import(node) is not None:
                prefix, exact = dynamic_import(node)
                targets |= {owner(prefix)} if exact else {m for m in names if m.startswith(prefix)}
        graph[name] = targets - {"", name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (each an import circle), by Tarjan's algorithm."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles_in_the_package_or_the_benchmarks():
    for root in (PACKAGE, BENCHMARKS):
        assert cycles(import_graph(sorted(root.rglob("*.py")))) == [], f"import circles in {root.name}/"


def test_benchmarks_never_import_tests():
    for f in sorted(BENCHMARKS.rglob("*.py")):
        assert not any(n.split(".")[0] == "tests" for n in imported(f.read_text(), "benchmarks")), f.name


def test_the_circle_check_sees_type_checking_and_function_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "evolq_pl"
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("")
    (pkg / "a" / "x.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from evolq_pl.a.y import Y\n")
    (pkg / "a" / "y.py").write_text("def f():\n    from evolq_pl.a import x\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", pkg)
    assert cycles(import_graph(sorted(pkg.rglob("*.py")))) == [["evolq_pl.a.x", "evolq_pl.a.y"]]


def test_the_circle_check_sees_imports_by_name(tmp_path, monkeypatch):
    """``importlib.import_module`` of a written name (or an f-string's fixed prefix: every module under it) is an
    import like any other: benchmarks/report.py once hid a circle that way."""
    pkg = tmp_path / "evolq_pl"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "x.py").write_text("import importlib\ndef f(n):\n    return importlib.import_module(f'evolq_pl.{n}')\n")
    (pkg / "y.py").write_text("import evolq_pl.x\n")
    (pkg / "z.py").write_text("from importlib import import_module\ndef g():\n    import_module('evolq_pl.x')\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", pkg)
    graph = import_graph(sorted(pkg.rglob("*.py")))
    assert graph["evolq_pl.z"] == {"evolq_pl.x"}
    assert cycles(graph) == [["evolq_pl.x", "evolq_pl.y", "evolq_pl.z"]]


@pytest.mark.parametrize("name", ["io.py", "errors.py"])
def test_root_helpers_are_below_every_layer(name):
    """evolq_pl/io.py (atomic writes, the writable-folder probe) and errors.py (the error base) are used by every
    layer: they import no project module and nothing outside the standard library (io.py: errors.py only)."""
    names = {n for n in imported((PACKAGE / name).read_text(), "evolq_pl")} - {"evolq_pl.errors"}
    tops = {n.split(".")[0] for n in names}
    assert tops <= set(sys.stdlib_module_names), tops - set(sys.stdlib_module_names)


def test_every_error_class_is_a_user_error():
    """The command line prints an EvolQError in one line and shows any other exception with its traceback: every
    exception class the package defines derives from EvolQError (checked on the source, then on the classes)."""
    import importlib
    from evolq_pl.errors import EvolQError
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__main__.py":
            continue
        module = importlib.import_module(module_name(path))
        for node in ast.walk(ast.parse(path.read_text())):
            cls = getattr(module, node.name, None) if isinstance(node, ast.ClassDef) else None
            if isinstance(cls, type) and issubclass(cls, BaseException):
                assert issubclass(cls, EvolQError), f"{module.__name__}.{cls.__name__}"


def test_every_lightning_module_is_lightning_glue():
    """lightning/ holds Lightning glue only: each file imports Lightning, directly or through a lightning/ module
    that does (what needs no Lightning lives in search/ or report/)."""
    folder = PACKAGE / "lightning"
    graph = import_graph(sorted(PACKAGE.rglob("*.py")))
    direct = {module_name(f) for f in folder.glob("*.py")
              if any(n.split(".")[0] == "lightning" for n in imported(f.read_text(), "evolq_pl.lightning"))}
    glue = set(direct)
    while True:
        more = {m for m in (module_name(f) for f in folder.glob("*.py")) if graph[m] & glue} - glue
        if not more:
            break
        glue |= more
    plain = sorted(module_name(f) for f in folder.glob("*.py") if f.name != "__init__.py")
    assert [m for m in plain if m not in glue] == []


def test_compile_backend_is_the_search_evaluators_concern():
    """Only the search's settings and its evaluator name ``compile_backend``; the rest reads one summary."""
    naming = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if "compile_backend" in p.read_text())
    assert naming == ["search/evaluator.py", "search/evolution.py"]


def test_no_package_file_over_300_lines():
    """A file past 300 lines holds more than one concern (issue 25): split it where the concerns part."""
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 300}
    assert long == {}
