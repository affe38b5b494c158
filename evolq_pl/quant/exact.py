"""The compiled path: everything a ``torch.compile``'d quantized forward needs to give eager's bits, and the only
module outside ``evolq_pl.search`` that knows about compiling.

Inductor writes its own vectorised exp, erf, sqrt and log2 and its own reductions, which differ from ATen's
kernels in the last bit, and splits a linear's or a convolution's bias into a separate add; one ulp before a
rounding can move a value to the next integer code, so a compiled quantized forward would not reproduce eager's
codes. Inside ``exact_compiled(model)``:

  * those computations run as opaque custom ops (``evolq_pl::…``): inductor calls them as ATen-run kernels, bit
    for bit the eager result, and still fuses the fake-quant chains around them. Torch's own functions (softmax,
    GELU, linear, conv2d) are routed to them by a ``TorchFunctionMode``; the core's functions (the integer
    LayerNorm's moments and multiplier, the log-int softmax) are traced as them through
    ``torch.compiler.substitute_in_graph``, registered on first entry and for every later compile (they only
    make those functions opaque);
  * every weight layer multiplies by its quantized weight computed eagerly on entry (the layers' one hook,
    ``quantized_weight``): compiled graphs read it as an input, where fake-quantizing inside the graph would
    redo it at every call, and a Python-side cache check would make dynamo guard on it and recompile after
    every scale change.

The rest of the quantized forward (fake-quant, matmuls, Hardswish) compiles to the same bits
(tests/search/test_compiled.py, on CPU; on CUDA the bitwise check has not been run). A forward compiled outside
the context is correct but inductor's kernels may move its last bits: compile inside ``exact_compiled(model)``
for eager's codes. (One compile check stays in the core: the quantizers' layout buffer, ``functional.
layout_buffer``, is none in any compiled graph, whoever compiles it.)
"""
from __future__ import annotations

import functools
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from evolq_pl.quant import functional


def _opaque(name: str, fn: Callable, fake: Callable | None = None) -> Callable:
    """``fn`` (typed tensor arguments) as the custom op ``evolq_pl::name``; ``fake`` gives its outputs' shapes from
    fake tensors (default: ``fn`` itself run on them)."""
    op = torch.library.custom_op(f"evolq_pl::{name}", fn, mutates_args=())
    op.register_fake(fake or fn)
    return op


def _softmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.softmax(x, dim)


def _gelu(x: torch.Tensor, approximate: str) -> torch.Tensor:
    return F.gelu(x, approximate=approximate)


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    return F.linear(x, weight, bias)


def _conv2d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride: list[int],
            padding: list[int], dilation: list[int], groups: int) -> torch.Tensor:
    return F.conv2d(x, weight, bias, stride, padding, dilation, groups)


def _log_int_softmax(logits: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    return functional.log_int_softmax(logits, scale, bits)


SOFTMAX, GELU, LINEAR = _opaque("softmax", _softmax), _opaque("gelu", _gelu), _opaque("linear", _linear)
CONV2D = _opaque("conv2d", _conv2d)
POW2_MULTIPLIER = _opaque("pow2_multiplier", functional.pow2_multiplier)  # log2 and exp2
CODE_MOMENTS = _opaque("code_moments", functional.code_moments)  # sums past 2^24, sqrt
LOG_INT_SOFTMAX = _opaque("log_int_softmax", _log_int_softmax,  # log2, exp2 and sums; a float() of its scale
                          lambda logits, scale, bits: torch.empty_like(logits))


def _pair(v: int | tuple[int, ...] | list[int]) -> list[int]:
    return [v, v] if isinstance(v, int) else list(v)


def _route_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, stride: Any = 1,
                  padding: Any = 0, dilation: Any = 1, groups: int = 1) -> torch.Tensor:
    if isinstance(padding, str):  # "same"/"valid": ATen's own padding logic, compiled as it is
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    return CONV2D(x, weight, bias, _pair(stride), _pair(padding), _pair(dilation), groups)


def _route_softmax(x: torch.Tensor, dim: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    return SOFTMAX(x, dim) if dtype is None else torch.softmax(x, dim, dtype=dtype)


def _route_f_softmax(x: torch.Tensor, dim: int | None = None, _stacklevel: int = 3,
                     dtype: torch.dtype | None = None) -> torch.Tensor:
    return _route_softmax(x, dim, dtype) if dim is not None else F.softmax(x, dim, _stacklevel, dtype)


# torch function → the same call through its opaque op (the arguments as the function takes them)
ROUTES: dict[Callable, Callable] = {
    torch.softmax: _route_softmax, torch.Tensor.softmax: _route_softmax, F.softmax: _route_f_softmax,
    F.gelu: lambda x, approximate="none": GELU(x, approximate),
    F.linear: lambda x, weight, bias=None: LINEAR(x, weight, bias),
    F.conv2d: _route_conv2d,
}


class _ATenKernels(TorchFunctionMode):
    """Torch functions in ``ROUTES`` run as their opaque op; every other call as it is."""

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        return ROUTES.get(func, func)(*args, **(kwargs or {}))


def _traced_log_int_softmax(logits: torch.Tensor, scale: float | torch.Tensor, bits: int = 4) -> torch.Tensor:
    if not isinstance(scale, torch.Tensor):
        scale = torch.tensor(scale, dtype=torch.float64)
    return LOG_INT_SOFTMAX(logits, scale, bits)


@functools.cache
def _substitute_core_functions() -> None:
    """Dynamo traces these core functions as their opaque op from now on (once per process: a function takes one
    substitute)."""
    substitutes: dict[Callable, Callable] = {
        functional.pow2_multiplier: lambda *args, **kwargs: POW2_MULTIPLIER(*args, **kwargs),
        functional.code_moments: lambda *args, **kwargs: CODE_MOMENTS(*args, **kwargs),
        functional.log_int_softmax: _traced_log_int_softmax,
    }
    for fn, traced in substitutes.items():
        torch.compiler.substitute_in_graph(fn)(traced)


class _Pinned:
    """A weight layer that multiplies by ``pinned_weight``, its quantized weight computed before the compiled
    call (set with the class by ``exact_compiled``)."""

    pinned_weight: torch.Tensor

    def quantized_weight(self) -> torch.Tensor:
        return self.pinned_weight


@functools.cache
def _pinned_class(cls: type) -> type:
    return type(f"Pinned{cls.__name__}", (_Pinned, cls), {})


@contextmanager
def exact_compiled(model: nn.Module) -> Iterator[nn.Module]:
    """A compiled forward of ``model`` inside gives eager's bits and reads every quantized weight as computed here,
    on entry (module docstring). Weights fail to compute (an uncalibrated layer): nothing is changed. Nests: an
    inner context keeps the outer one's weights."""
    _substitute_core_functions()
    layers = [m for m in model.modules() if callable(getattr(m, "quantized_weight", None))
              and not isinstance(m, _Pinned)]
    weights = [m.quantized_weight() for m in layers]
    classes = [type(m) for m in layers]
    for m, w in zip(layers, weights):
        m.__class__, m.pinned_weight = _pinned_class(type(m)), w
    try:
        with _ATenKernels():
            yield model
    finally:
        for m, cls in zip(layers, classes):
            m.__class__ = cls
            del m.pinned_weight


# inductor settings that keep eager's float rounding in generated GPU (Triton) kernels: no a*b+c contracted into
# one FMA (``emulate_precision_casts`` turns Triton's fp fusion off), IEEE-rounded division (``x / s`` right
# before a round), no flush of denormals to zero. CPU code is unaffected. Only those this torch has are set.
EAGER_NUMERICS = {"emulate_precision_casts": True, "eager_numerics.division_rounding": True,
                  "eager_numerics.disable_ftz": True}


def inductor_options() -> dict[str, bool]:
    """The ``EAGER_NUMERICS`` settings this torch knows (``torch.compile(options=...)`` refuses unknown keys)."""
    from torch._inductor import config
    known = config.get_config_copy()
    return {k: v for k, v in EAGER_NUMERICS.items() if k in known}
