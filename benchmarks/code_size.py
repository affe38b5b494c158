"""How big the package's top half is (issue 25): lines of code per area, not counting imports, docstrings,
comments and blank lines, of the working tree or of any commit.

    python -m benchmarks.code_size                     # the working tree → results/code_size.json, BENCHMARKS.md
    python -m benchmarks.code_size --commit 5acfbc4 --out benchmarks/results/code_size_before.json --no-report

The top half is what sits above the search: ``lightning/``, ``cli/``, ``export/``, ``report/`` and the package's
root modules. A line counts when it holds a token of code (a multi-line statement counts each of its lines).
"""
from __future__ import annotations

import ast
import io
import subprocess
import tarfile
import tempfile
import tokenize
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, benchmark_parser, machine, record, table

TOP_HALF = ("lightning", "cli", "export", "report")
SKIPPED_TOKENS = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                  tokenize.ENDMARKER}


def _docstring_and_import_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            lines.update(range(node.lineno, node.end_lineno + 1))
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body:
            first = body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                lines.update(range(first.lineno, first.end_lineno + 1))
    return lines


def code_lines(source: str, first: int = 1, last: int | None = None) -> int:
    """Lines ``first``…``last`` of ``source`` that hold code other than imports and docstrings."""
    code = {line for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type not in SKIPPED_TOKENS
            for line in range(tok.start[0], tok.end[0] + 1)}
    code -= _docstring_and_import_lines(ast.parse(source))
    return sum(first <= line <= (last or line) for line in code)


def _class_size(source: str, name: str) -> dict[str, int] | None:
    cls = next((n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ClassDef) and n.name == name), None)
    if cls is None:
        return None
    return {"raw": cls.end_lineno - cls.lineno + 1, "code": code_lines(source, cls.lineno, cls.end_lineno)}


def measure(package: Path) -> dict[str, Any]:
    files = sorted(p for area in TOP_HALF for p in (package / area).rglob("*.py")) + sorted(package.glob("*.py"))
    sizes = {str(p.relative_to(package.parent)): code_lines(p.read_text()) for p in files}
    areas = {area: sum(n for f, n in sizes.items() if f.split("/")[1] == area) for area in TOP_HALF}
    areas["root modules"] = sum(n for f, n in sizes.items() if f.count("/") == 1)
    module = package / "lightning" / "evolq.py"
    return {"top_half": sum(sizes.values()), "areas": areas, "files": sizes,
            "evolq_module": _class_size(module.read_text(), "EvolQModule") if module.exists() else None}


def measure_commit(commit: str) -> dict[str, Any]:
    """``measure`` of a commit's ``evolq_pl/`` (from ``git archive``)."""
    archive = subprocess.run(["git", "archive", commit, "evolq_pl"], cwd=ROOT, capture_output=True, check=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        tarfile.open(fileobj=io.BytesIO(archive)).extractall(tmp, filter="data")
        return measure(Path(tmp) / "evolq_pl")


def section(data: dict[str, Any], before: dict[str, Any] | None = None) -> str:
    then = before or {}
    rows = [[area, then.get("areas", {}).get(area, "-"), n] for area, n in data["areas"].items()]
    rows.append(["**top half**", then.get("top_half", "-"), f"**{data['top_half']}**"])
    module, old = data.get("evolq_module") or {}, then.get("evolq_module") or {}
    rows.append(["EvolQModule class (code / raw lines)", f"{old.get('code', '-')} / {old.get('raw', '-')}",
                 f"{module.get('code', '-')} / {module.get('raw', '-')}"])
    largest = sorted(data["files"].items(), key=lambda kv: -kv[1])[:5]
    then_commit = then.get("machine", {}).get("commit", "?")
    return "\n".join([
        "### Code size of the top half", "",
        f"`python -m benchmarks.code_size`: lines of code (imports, docstrings, comments and blank lines not counted) "
        f"of the package above the search (`lightning/`, `cli/`, `export/`, `report/`, root modules), at commit "
        f"`{data['machine']['commit']}`{' (uncommitted changes)' if data['machine'].get('dirty') else ''} and at "
        f"`{then_commit}` (the audit that set the target). Target: ≤ 1,200.", "",
        table(["area", f"`{then_commit}`", f"`{data['machine']['commit']}`"], rows), "",
        "Largest files now: " + ", ".join(f"`{f}` {n}" for f, n in largest) + ".",
    ])


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--commit", help="measure this commit's package instead of the working tree's")
    args = parser.parse_args()
    data = measure(ROOT / "evolq_pl") if args.commit is None else measure_commit(args.commit)
    here = machine() if args.commit is None else {}
    data["machine"] = {"commit": args.commit, "dirty": False} if args.commit else \
        {k: here[k] for k in ("date", "commit", "dirty")}
    print(section(data))
    record("code_size", data, args)


if __name__ == "__main__":
    main()
