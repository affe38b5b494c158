"""Integer grids: (bits, signed) with their lower/upper bounds (reference §1.1)."""
from __future__ import annotations

from dataclasses import dataclass

from evolq_pl.errors import EvolQError

MIN_BITS, MAX_BITS = 2, 8


class UnsupportedBitWidthError(EvolQError):
    pass


@dataclass(frozen=True)
class BitType:
    """An integer grid. Unsigned: [0, 2^b − 1]; signed: [−2^(b−1), 2^(b−1) − 1]."""

    bits: int
    signed: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.bits, int) or not MIN_BITS <= self.bits <= MAX_BITS:
            raise UnsupportedBitWidthError(
                f"bit width {self.bits!r} is not supported; accepted: integers {MIN_BITS}..{MAX_BITS}")

    @property
    def lower(self) -> int:
        return -(2 ** (self.bits - 1)) if self.signed else 0

    @property
    def upper(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.signed else 2**self.bits - 1

    @property
    def name(self) -> str:
        return f"{'int' if self.signed else 'uint'}{self.bits}"

    @classmethod
    def parse(cls, name: str) -> "BitType":
        """``"uint4"`` → BitType(4, False); ``"int8"`` → BitType(8, True)."""
        for prefix, signed in (("uint", False), ("int", True)):
            if name.startswith(prefix) and name[len(prefix):].isdigit():
                return cls(int(name[len(prefix):]), signed)
        raise UnsupportedBitWidthError(f"bit type {name!r} not understood; use uint<b> or int<b>, b in 2..8")
