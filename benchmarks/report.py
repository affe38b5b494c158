"""Shared by the benchmark scripts: machine description and BENCHMARKS.md section updates."""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"


def machine() -> dict[str, Any]:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return {"date": datetime.date.today().isoformat(), "commit": commit.stdout.strip() or "unknown",
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}


def machine_line(m: dict[str, Any]) -> str:
    return (f"Measured {m['date']} at commit `{m['commit']}` on {m['device']} ({m['cores']} cores, "
            f"{m['torch_threads']} torch threads, torch {m['torch']}).")


def write_json(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def update_section(name: str, markdown: str) -> None:
    """Replace (or append) the section between ``<!-- name:start -->`` and ``<!-- name:end -->``."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else "# Benchmarks\n\nEvery number here was written by the script named in its section.\n"
    block = f"{start}\n{markdown.strip()}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    BENCHMARKS_MD.write_text(text)


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


def record(name: str, data: dict[str, Any], args: argparse.Namespace,
           section: Callable[[dict[str, Any], dict[str, Any] | None], str]) -> None:
    """Write ``data`` (to ``--out`` or results/<name>.json) and, unless ``--no-report``, its BENCHMARKS.md section,
    with results/<name>_before.json (the same measurement at an earlier commit), when present, as "before"."""
    if args.out is not None:
        args.out.write_text(json.dumps(data, indent=2) + "\n")
    else:
        write_json(name, data)
    before_path = RESULTS / f"{name}_before.json"
    before = json.loads(before_path.read_text()) if before_path.exists() else None
    if not args.no_report:
        update_section(name, section(data, before))
