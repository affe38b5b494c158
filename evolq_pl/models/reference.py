"""The project's own small reference models (trained on Fashion-MNIST, shipped in the package)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evolq_pl.errors import EvolQError

REFERENCE_DIR = Path(__file__).resolve().parents[1] / "reference_models"
MANIFEST = REFERENCE_DIR / "manifest.json"
SCHEME = "reference:"  # checkpoint_path: reference:<name> names a shipped reference model's weights


def reference_models() -> dict[str, dict[str, Any]]:
    """name → {model_name, model_kwargs, image_size, file, sha256, top1_test, top1_subset2000, config}."""
    return json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {}


def reference_model(name: str) -> dict[str, Any]:
    models = reference_models()
    if name not in models:
        raise EvolQError(f"unknown reference model {name!r}; shipped: {', '.join(sorted(models)) or 'none'}")
    info = dict(models[name])
    info["path"] = str(REFERENCE_DIR / info["file"])
    return info


def weights_file(checkpoint_path: str | Path) -> Path:
    """The file of a float checkpoint: ``reference:<name>`` is a shipped reference model's (wherever the
    package is installed), anything else a path."""
    text = str(checkpoint_path)
    if not text.startswith(SCHEME):
        return Path(checkpoint_path)
    name, models = text.removeprefix(SCHEME), reference_models()
    if name not in models:
        raise EvolQError(f"checkpoint_path={text!r}: unknown reference model; shipped: "
                         f"{', '.join(SCHEME + m for m in sorted(models)) or 'none'}")
    return REFERENCE_DIR / models[name]["file"]
