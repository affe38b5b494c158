"""Mode switches as context managers that restore state: calibration, quantization off (true float)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator

import torch
from torch import nn

from evolq_pl.errors import EvolQError
from evolq_pl.quant.functional import all_finite


class NonFiniteError(EvolQError):
    """A NaN or an infinity reached a quantizer in calibration; ``source`` is that quantizer."""

    def __init__(self, message: str, source: nn.Module | None = None) -> None:
        super().__init__(message)
        self.source = source


class QuantSwitch:
    """Mixin for modules with two flags: ``calibrating`` (observe, pass float) and ``enabled`` (quantize);
    ``last_batch`` is set by ``calibrate`` for the last calibration batch."""

    calibrating: bool = False
    enabled: bool = True
    last_batch: bool = False

    def begin_calibration(self) -> None:
        """Called when calibration starts."""

    def abort_calibration(self) -> None:
        """Called instead of ``finalize`` when calibration fails: put back the state from before it."""

    def finalize(self) -> str | None:
        """Called once when calibration ends; returns what went wrong, if anything."""
        return None


def switches(model: nn.Module) -> list[QuantSwitch]:
    return [m for m in model.modules() if isinstance(m, QuantSwitch)]


@contextmanager
def calibration_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Observers see full-precision tensors inside the block; parameters are computed on a clean exit
    (by the observers that need no data; ``calibrate`` also runs the MSE-based ones on its last batch)."""
    mods = switches(model)
    saved = [(m.calibrating, m.enabled) for m in mods]
    for m in mods:
        m.begin_calibration()
        m.calibrating, m.enabled = True, False
    try:
        yield model
    except BaseException:
        for m in mods:  # no half-calibrated model: the parameters from before stay
            m.abort_calibration()
        raise
    finally:
        for m, (cal, en) in zip(mods, saved):
            m.calibrating, m.enabled, m.last_batch = cal, en, False
    names = {id(m): n for n, m in model.named_modules()}
    problems = [(names.get(id(m), "?"), p) for m in mods if (p := m.finalize()) is not None]  # without an exception
    if problems:
        name, problem = problems[0]
        raise EvolQError(f"{len(problems)} quantizers not calibrated, e.g. {name}: {problem} (calibrate with "
                           "evolq_pl.calibrate(model, batches), which marks the last batch; not calibration_mode alone)")


@contextmanager
def quant_disabled(model: nn.Module, only: Iterable[QuantSwitch] | None = None) -> Iterator[nn.Module]:
    """The true float model: every quantizer off and integer LayerNorm back to float LayerNorm.

    ``only``: turn off just these switches (e.g. one group of quantizers, to measure its share of the error).
    """
    mods = switches(model) if only is None else list(only)
    saved = [m.enabled for m in mods]
    for m in mods:
        m.enabled = False
    try:
        yield model
    finally:
        for m, en in zip(mods, saved):
            m.enabled = en


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """FQ-ViT calibration: run float batches through the model, then set every quantizer's parameters.

    Every observer sees full-precision tensors (no progressive quantization). MSE-based observers
    (OMSE, PTF) search on the last batch, min/max accumulate over all batches (reference §2).
    Returns the number of batches used.
    """
    mods = switches(model)
    if not mods:
        raise EvolQError("model has no quantizers: convert it with quantize_model() first")
    batches = iter(batches)
    x, n = next(batches, None), 0
    if x is None:
        raise EvolQError("calibrate() got an empty iterable of batches; give at least one input tensor")
    # normal tensors even when called under inference mode (Lightning's validation): scales must keep versions;
    # inference_mode(False) turns grad mode back on, so no_grad inside it (else autograd keeps every activation)
    with torch.inference_mode(False), torch.no_grad(), calibration_mode(model):
        while x is not None:
            following = next(batches, None)
            if following is None:  # parameters are computed during this batch's forward (nothing is kept)
                for m in mods:
                    m.last_batch = True
            _calibration_forward(model, x, n)
            x, n = following, n + 1
    return n


def _calibration_forward(model: nn.Module, x: torch.Tensor, n: int) -> None:
    if not all_finite(x):
        raise EvolQError(f"calibration batch {n} contains NaN or inf values")
    try:
        model(x)
    except NonFiniteError as err:
        names = {id(m): name for name, m in model.named_modules()}
        where = names.get(id(err.source), "a quantizer")
        raise NonFiniteError(f"calibration batch {n}: {err} at {where} (the first quantizer it reached; "
                             "check the weights before it and the images)", err.source) from None


def first_nonfinite(model: nn.Module, x: torch.Tensor) -> str:
    """Name (and type) of the first module, in execution order, whose output holds a NaN or an infinity."""
    found: list[str] = []
    names = {m: n for n, m in model.named_modules()}

    def hook(mod: nn.Module, _: object, out: object) -> None:
        if not found and isinstance(out, torch.Tensor) and not all_finite(out):
            found.append(f"{names[mod] or 'the model'} ({type(mod).__name__})")

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return found[0] if found else "no module output (the loss itself)"
