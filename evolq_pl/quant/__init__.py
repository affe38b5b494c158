"""Quantization core: torch only (no timm, no Lightning)."""
from evolq_pl.quant.bittype import BitType, UnsupportedBitWidthError
from evolq_pl.quant.config import QuantConfig
from evolq_pl.quant.modes import QuantSwitch, calibrate, calibration_mode, quant_disabled
from evolq_pl.quant.observers import OBSERVERS, build_observer
from evolq_pl.quant.quantizer import Log2Quantizer, NotCalibratedError, UniformQuantizer

__all__ = ["BitType", "UnsupportedBitWidthError", "QuantConfig", "QuantSwitch", "calibrate", "calibration_mode",
           "quant_disabled", "OBSERVERS", "build_observer", "Log2Quantizer", "NotCalibratedError", "UniformQuantizer"]
