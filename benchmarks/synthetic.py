"""What the user-path benchmarks run on where no ImageNet and no hub weights exist: a synthetic image folder, a
float checkpoint with realistic random weights, and ``evolq-pl fit`` run as a user runs it (a fresh process)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from evolq_pl.models import create_float_model
from evolq_pl.models.random_weights import randomize_


def make_imagefolder(root: Path, train: int, val: int, classes: int = 10, size: int = 256) -> None:
    """Seeded noise JPEGs laid out as ImageNet (``train/<class>/``, ``val/<class>/``)."""
    from PIL import Image
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", train), ("val", val)):
        for i in range(n):
            d = root / split / f"c{i % classes}"
            d.mkdir(parents=True, exist_ok=True)
            pixels = torch.randint(0, 256, (size, size, 3), generator=g, dtype=torch.uint8).numpy()
            Image.fromarray(pixels).save(d / f"{i}.jpg", quality=90)


def float_checkpoint(path: Path, model_name: str, model_kwargs: dict[str, Any] | None = None) -> None:
    """A float state dict of ``model_name`` with realistic random weights (``checkpoint_path`` for a fit)."""
    torch.save(randomize_(create_float_model(model_name, **(model_kwargs or {})), 0).state_dict(), path)


def fit_cli(args: list[str], run_dir: Path) -> dict[str, Any]:
    """``evolq-pl fit <args> --run_dir <run_dir>`` in a fresh process: its wall seconds, results.json (without
    per-image lists), the final scales and the checkpoint's size; the output goes to ``<run_dir>.log``."""
    args = [*args, "--run_dir", str(run_dir)]
    exe = shutil.which("evolq-pl")
    cmd = [exe, "fit", *args] if exe else [sys.executable, "-m", "evolq_pl", "fit", *args]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    run_dir.with_suffix(".log").write_text(proc.stdout + proc.stderr)
    out: dict[str, Any] = {"command": " ".join(["evolq-pl", "fit", *args]), "wall_seconds": wall,
                           "returncode": proc.returncode}
    if proc.returncode != 0:
        out["error_tail"] = (proc.stdout + proc.stderr)[-3000:]
        return out
    out["results"] = {k: v for k, v in json.loads((run_dir / "results.json").read_text()).items()
                      if not k.startswith("correct_") and k != "settings"}
    last = run_dir / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    out["scales"] = {k: v for k, v in ckpt["state_dict"].items() if k.endswith(".scale")}
    out["checkpoint_bytes"] = last.stat().st_size
    out["checkpoint_files"] = sorted(p.name for p in last.parent.iterdir())
    return out
