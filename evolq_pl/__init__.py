"""evolq_pl: Evol-Q post-training quantization of vision transformers on PyTorch Lightning.

Public API (imported lazily, so ``import evolq_pl.quant`` stays free of timm and Lightning)::

    from evolq_pl import QuantConfig, create_quant_model, calibrate, quant_report, search_units
"""
from __future__ import annotations

import importlib
from typing import Any

_API = {
    "QuantConfig": "evolq_pl.quant", "calibrate": "evolq_pl.quant", "calibration_mode": "evolq_pl.quant",
    "quant_disabled": "evolq_pl.quant", "SUPPORTED_MODELS": "evolq_pl.models",
    "create_quant_model": "evolq_pl.models", "format_report": "evolq_pl.models", "quant_report": "evolq_pl.models",
    "quantize_model": "evolq_pl.models", "search_units": "evolq_pl.models",
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'evolq_pl' has no attribute {name!r}")
    return getattr(importlib.import_module(_API[name]), name)
