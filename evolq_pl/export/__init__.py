"""Export of calibrated/searched models: real low-bit weights (safetensors) and ONNX QDQ."""
from evolq_pl.export.output import ExportError
from evolq_pl.export.safetensors_io import export_safetensors, load_safetensors

__all__ = ["ExportError", "export_safetensors", "load_safetensors"]
