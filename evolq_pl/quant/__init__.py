"""Quantization core: torch only (no timm, no Lightning)."""
from evolq_pl.quant.bittype import BitType, UnsupportedBitWidthError
from evolq_pl.quant.config import QuantConfig
from evolq_pl.quant.modes import QuantSwitch, calibrate, calibration_mode, quant_disabled
from evolq_pl.quant.observers import OBSERVERS, build_observer
from evolq_pl.quant.quantizer import (NotCalibratedError, UniformQuantizer, is_calibrated, load_scales, quantizers,
                                      scales_loaded, snapshot_scales)

__all__ = ["BitType", "UnsupportedBitWidthError", "QuantConfig", "QuantSwitch", "calibrate", "calibration_mode",
           "quant_disabled", "OBSERVERS", "build_observer", "NotCalibratedError", "UniformQuantizer", "is_calibrated",
           "load_scales", "quantizers", "scales_loaded", "snapshot_scales"]
