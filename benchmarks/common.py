"""Shared by the benchmark scripts: where results live, the machine a figure was measured on, tables, and the
rewrite of BENCHMARKS.md after a benchmark (by ``python -m benchmarks.report``, the top of ``benchmarks/``: it
imports every suite, and nothing imports it)."""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from benchmarks.fingerprint import platform_id

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
README_MD = ROOT / "README.md"
HISTORY_MD = ROOT / "BENCHMARKS_HISTORY.md"


def replace_block(text: str, name: str, markdown: str) -> str:
    """``text`` with the block between ``<!-- name:start -->`` and ``<!-- name:end -->`` replaced."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start not in text or end not in text:
        raise RuntimeError(f"no {start} … {end} block")
    return text[: text.index(start)] + f"{start}\n{markdown.strip()}\n{end}" + text[text.index(end) + len(end):]


def machine() -> dict[str, Any]:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    changed = subprocess.run(["git", "status", "--porcelain", "--", "evolq_pl", "configs", "benchmarks/*.py"],
                             cwd=ROOT, capture_output=True, text=True)
    return {"date": datetime.date.today().isoformat(), "commit": commit.stdout.strip() or "unknown",
            "dirty": bool(changed.stdout.strip()) or changed.returncode != 0,  # code not in the commit measured
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
            "platform": platform_id()}


def machine_line(m: dict[str, Any]) -> str:
    return (f"Measured {m['date']} at commit `{m['commit']}` on {m['device']} ({m['cores']} cores, "
            f"{m['torch_threads']} torch threads, torch {m['torch']}).")


def write_json(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def load(name: str) -> dict[str, Any] | None:
    """results/<name>.json, or None where it was never measured."""
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def update_section(name: str) -> None:
    """After a benchmark wrote results/<name>.json: rewrite BENCHMARKS.md, its history file and README's generated
    blocks wholly from the stored JSON, by ``python -m benchmarks.report`` (which checks that a section ``name``
    is among its sections)."""
    subprocess.run([sys.executable, "-m", "benchmarks.report", "--section", name], cwd=ROOT, check=True)


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def benchmark_parser(doc: str | None) -> argparse.ArgumentParser:
    """A benchmark's argument parser with the options of ``record``: ``--out`` and ``--no-report``."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here (default: benchmarks/results)")
    parser.add_argument("--no-report", action="store_true", help="do not update BENCHMARKS.md")
    return parser


def record(name: str, data: dict[str, Any], args: argparse.Namespace) -> None:
    """Write ``data`` (to ``--out`` or results/<name>.json) and, unless ``--no-report``, BENCHMARKS.md (its
    section shows results/<name>_before.json, the same measurement at an earlier commit, when present)."""
    if args.out is not None:
        args.out.write_text(json.dumps(data, indent=2) + "\n")
    else:
        write_json(name, data)
    if not args.no_report and args.out is None:
        update_section(name)


