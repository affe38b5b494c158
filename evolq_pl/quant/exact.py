"""Float ops that must give ATen's bits under ``torch.compile`` too.

Inductor writes its own vectorised exp, erf, sqrt and log2 and its own reductions, which differ from ATen's
kernels in the last bit; one ulp before a rounding can move a value to the next integer code, so a compiled
quantized forward would not reproduce eager's codes. The functions decorated here (softmax, GELU, and in
``functional``: the integer LayerNorm's row sums and sqrt, the power-of-two multiplier, the log-int softmax; in
``layers.linear``: the weight fake-quant with its bias correction) run as opaque custom ops while compiling
(inductor calls the ATen kernels, bit for bit the eager result, and still fuses the fake-quant chains around
them) and directly otherwise. The rest of the quantized forward (fake-quant, matmuls, Hardswish) compiles to
the same bits (tests/search/test_compiled.py, on CPU; on CUDA the bitwise check has not been run).
"""
from __future__ import annotations

import functools
from typing import Callable, Optional, TypeVar

import torch
from torch import nn

F = TypeVar("F", bound=Callable)


def aten_bits(outputs: int = 1, rows: bool = False, run_fake: bool = False) -> Callable[[F], F]:
    """Decorate a function of tensors whose ``outputs`` results are shaped like its first argument x (``rows``:
    like x reduced over its last dim with keepdim, (..., 1); ``run_fake``: whatever shape the function itself
    gives on fake tensors)."""
    def wrap(fn: F) -> F:
        op = torch.library.custom_op(f"evolq_pl::{fn.__name__}", fn, mutates_args=())

        @op.register_fake
        def _(x: torch.Tensor, *args, **kwargs):  # noqa: ANN202 (mirrors fn's signature)
            if run_fake:
                return fn(x, *args, **kwargs)
            like = lambda: x.new_empty((*x.shape[:-1], 1)) if rows else torch.empty_like(x)  # noqa: E731
            return like() if outputs == 1 else tuple(like() for _ in range(outputs))

        @functools.wraps(fn)
        def call(*args, **kwargs):  # noqa: ANN202
            return op(*args, **kwargs) if torch.compiler.is_compiling() else fn(*args, **kwargs)
        return call  # type: ignore[return-value]
    return wrap


@aten_bits()
def exact_softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return torch.softmax(x, dim)


@aten_bits()
def exact_gelu(x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    return nn.functional.gelu(x, approximate=approximate)


@aten_bits()
def exact_sqrt(x: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(x)


@aten_bits(outputs=3, rows=True)
def exact_row_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sum, sum of squares and mean over the last dim (keepdim): float32 sums past 2^24 round by summation
    order, and inductor sums in another order than ATen."""
    return x.sum(-1, keepdim=True), (x * x).sum(-1, keepdim=True), x.mean(-1, keepdim=True)


@aten_bits(run_fake=True)
def exact_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """F.linear with its bias added inside the GEMM (inductor splits it into a matmul and a separate add, whose
    rounding differs)."""
    return nn.functional.linear(x, weight, bias)


@aten_bits(run_fake=True)
def exact_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride: list[int],
                 padding: list[int], dilation: list[int], groups: int) -> torch.Tensor:
    """F.conv2d with ATen's bias handling (compiled with a bias, a 16×16/16 patch convolution differed from eager
    in the last bit of most outputs on CPU)."""
    return nn.functional.conv2d(x, weight, bias, stride, padding, dilation, groups)


class ExactGELU(nn.GELU):
    """nn.GELU with ATen's bits, compiled or not (swapped in for nn.GELU by the model converter)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return exact_gelu(x, self.approximate)


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
