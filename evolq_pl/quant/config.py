"""QuantConfig: every quantization choice of the FQ-ViT/Evol-Q pipeline, validated on construction."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from evolq_pl.errors import EvolQError
from evolq_pl.quant.bittype import MAX_BITS, MIN_BITS, BitType, UnsupportedBitWidthError
from evolq_pl.quant.observers import OBSERVERS


@dataclass
class QuantConfig:
    """Defaults = Evol-Q's ``e2e`` pipeline (DESIGN §2, reference §4).

    Args:
        w_bits: weight bits (2..8; the paper uses 3, 4, 8). Every Linear/Conv incl. patch embed and head.
        w_signed: signed weights (symmetric); the paper's run.sh uses unsigned (asymmetric, per-channel z).
        w_observer: weight observer (minmax in ``e2e``; omse in ``fq++``).
        bias_correction: per-channel mean/std correction of dequantized weights (reference §5).
        a_bits, a_signed, a_observer: activation quantizers (uint8, per tensor, OMSE).
        ptf: power-of-two-factor quantizers on LayerNorm inputs / residual streams / LeViT stem.
        int_layernorm: integer LayerNorm fed by the PTF scales (requires ``ptf``).
        lis: log-int softmax (4-bit) instead of float softmax + uniform quantizer.
        softmax_bits: bits of the uniform softmax-output quantizer.
        input_quant: quantize the input image (DeiT in the reference; None = decided by model family).
        exclude: fnmatch patterns of module names to leave in float (e.g. ``"head"``).
    """

    w_bits: int = 4
    w_signed: bool = False
    w_observer: str = "minmax"
    bias_correction: bool = True
    a_bits: int = 8
    a_signed: bool = False
    a_observer: str = "omse"
    ptf: bool = True
    int_layernorm: bool = True
    lis: bool = False
    softmax_bits: int = 8
    input_quant: bool | None = None
    exclude: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for key in ("w_bits", "a_bits", "softmax_bits"):
            try:
                BitType(getattr(self, key))
            except UnsupportedBitWidthError:
                raise UnsupportedBitWidthError(f"quant.{key}={getattr(self, key)!r}: not supported; accepted: "
                                               f"integers {MIN_BITS}..{MAX_BITS}") from None
        for key in ("w_observer", "a_observer"):
            if getattr(self, key) not in OBSERVERS:
                raise EvolQError(f"quant.{key}={getattr(self, key)!r}: unknown observer; accepted: {', '.join(sorted(OBSERVERS))}")
        if self.w_observer == "percentile":
            raise EvolQError("w_observer='percentile' is per-tensor only; weights are per channel: use minmax or omse")
        if self.int_layernorm and not self.ptf:
            raise EvolQError("int_layernorm=True requires ptf=True (the integer LayerNorm reads the PTF scales)")
        self.exclude = list(self.exclude)

    @property
    def w_type(self) -> BitType:
        return BitType(self.w_bits, self.w_signed)

    @property
    def a_type(self) -> BitType:
        return BitType(self.a_bits, self.a_signed)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
