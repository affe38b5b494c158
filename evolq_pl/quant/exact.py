"""Float ops that must give ATen's bits under ``torch.compile`` too.

Inductor writes its own vectorised exp, erf, sqrt and log2 and its own reductions, which differ from ATen's
kernels in the last bit; one ulp before a rounding can move a value to the next integer code, so a compiled
quantized forward would not reproduce eager's codes. The functions decorated here run as opaque custom ops
while compiling (inductor calls the ATen kernels, bit for bit the eager result, and still fuses the
fake-quant chains around them) and directly otherwise. The rest of the quantized forward (fake-quant, matmuls,
the integer LayerNorm's sums, Hardswish) compiles to the same bits (tests/search/test_compiled.py).
"""
from __future__ import annotations

import functools
from typing import Callable, TypeVar

import torch
from torch import nn

F = TypeVar("F", bound=Callable)


def aten_bits(outputs: int = 1) -> Callable[[F], F]:
    """Decorate a function of tensors whose ``outputs`` results are shaped like its first argument."""
    def wrap(fn: F) -> F:
        op = torch.library.custom_op(f"evolq_pl::{fn.__name__}", fn, mutates_args=())

        @op.register_fake
        def _(x: torch.Tensor, *args, **kwargs):  # noqa: ANN202 (mirrors fn's signature)
            like = lambda: torch.empty_like(x, memory_format=torch.contiguous_format)  # noqa: E731
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


class ExactGELU(nn.GELU):
    """nn.GELU with ATen's bits, compiled or not (swapped in for nn.GELU by the model converter)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return exact_gelu(x, self.approximate)
