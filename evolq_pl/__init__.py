"""evolq_pl: Evol-Q post-training quantization of vision transformers on PyTorch Lightning.

Public API::

    from evolq_pl import QuantConfig, create_quant_model, calibrate, quant_report, search_units
"""
from evolq_pl.quant import QuantConfig, calibrate, calibration_mode, quant_disabled
from evolq_pl.models import (SUPPORTED_MODELS, create_quant_model, format_report, quant_report, quantize_model,
                             search_units)

__all__ = ["QuantConfig", "calibrate", "calibration_mode", "quant_disabled", "SUPPORTED_MODELS",
           "create_quant_model", "format_report", "quant_report", "quantize_model", "search_units"]
