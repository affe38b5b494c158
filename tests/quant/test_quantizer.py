"""UniformQuantizer's ``layout``: quantized straight into a permuted, contiguous order; observed in its own."""
import pytest
import torch
from torch import nn

from evolq_pl.quant import calibrate
from evolq_pl.quant.bittype import BitType
from evolq_pl.quant.quantizer import UniformQuantizer

LAYOUT = (2, 0, 3, 1)


class Permuting(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q = UniformQuantizer(BitType(8), "omse")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.q(x, layout=LAYOUT)


def test_layout_quantizes_into_the_permuted_order_and_calibrates_as_without():
    x = torch.randn(2, 5, 3, 4, generator=torch.Generator().manual_seed(0)) * 3
    plain, permuting = UniformQuantizer(BitType(8), "omse"), Permuting()
    seen = []
    update = permuting.q.observer.update
    permuting.q.observer.update = lambda view: (seen.append(view), update(view))[1]
    calibrate(plain, [x])
    calibrate(permuting, [x])  # the observer sees x, not its permutation: the same OMSE search, the same scale
    assert seen and all(v.data_ptr() == x.data_ptr() and torch.equal(v, x.reshape(1, -1)) for v in seen)
    assert torch.equal(permuting.q.scale, plain.scale) and torch.equal(permuting.q.zero_point, plain.zero_point)
    out = permuting(x)
    assert out.is_contiguous() and torch.equal(out, plain(x).permute(LAYOUT))
    permuting.q.enabled = False  # quantization off: the permuted view itself
    assert permuting(x).data_ptr() == x.data_ptr() and torch.equal(permuting(x), x.permute(LAYOUT))


def test_layout_is_refused_for_per_channel_quantizers():
    q = UniformQuantizer(BitType(8), "minmax", per_channel=True)
    with pytest.raises(ValueError, match=r"layout=\(1, 0\): only per-tensor quantizers take a layout"):
        q(torch.zeros(2, 3), layout=(1, 0))
