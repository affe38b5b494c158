"""timm model conversion (first timm import in the dependency chain)."""
from evolq_pl.models.api import (create_quant_model, format_report, quant_report, quantize_model,
                                 unquantized_layers)
from evolq_pl.models.factory import SUPPORTED_MODELS, CheckpointError, UnknownModelError, create_float_model, \
    float_source
from evolq_pl.models.units import SearchUnit, search_units

__all__ = ["create_quant_model", "format_report", "quant_report", "quantize_model",
           "unquantized_layers", "SUPPORTED_MODELS", "CheckpointError", "UnknownModelError", "create_float_model",
           "float_source", "SearchUnit", "search_units"]
