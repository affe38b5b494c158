"""The project's own small reference models (trained on Fashion-MNIST, shipped in the package)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REFERENCE_DIR = Path(__file__).resolve().parents[1] / "reference_models"
MANIFEST = REFERENCE_DIR / "manifest.json"


def reference_models() -> dict[str, dict[str, Any]]:
    """name → {model_name, model_kwargs, image_size, file, sha256, top1_test, top1_subset2000, config}."""
    return json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {}


def reference_model(name: str) -> dict[str, Any]:
    models = reference_models()
    if name not in models:
        raise ValueError(f"unknown reference model {name!r}; shipped: {', '.join(sorted(models)) or 'none'}")
    info = dict(models[name])
    info["path"] = str(REFERENCE_DIR / info["file"])
    return info
