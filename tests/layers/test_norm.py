"""QLayerNorm: integer LayerNorm when quantization is on (worked by hand), float LayerNorm otherwise."""
import torch
import torch.nn.functional as F
from torch import nn

from evolq_pl.layers import QLayerNorm
from evolq_pl.quant import BitType, QuantConfig, UniformQuantizer, quant_disabled


def quantizer(scale: list[float]) -> UniformQuantizer:
    q = UniformQuantizer(BitType(8), per_channel=len(scale) > 1)
    q.scale, q.zero_point = torch.tensor(scale), torch.zeros(len(scale))
    return q


def norm(gamma: float) -> QLayerNorm:
    ln = QLayerNorm.from_float(nn.LayerNorm(2), QuantConfig())
    with torch.no_grad():
        ln.weight.fill_(gamma)
        ln.bias.zero_()
    return ln


def test_integer_layernorm_by_hand():
    x = torch.tensor([[0.3, -0.1]])  # on the input grid s = 0.1: codes 3, −1
    in_q, out_q = quantizer([0.1, 0.1]), quantizer([0.25])
    # mean = 0.1·(3 − 1)/2 = 0.1; σ = (0.1/2)·√(2·(9 + 1) − 2²) = 0.2
    # γ = 1: A = (0.1/0.2)·1/0.25 = 2 → N = 6, M = 128; B = round(−(0.1/0.2)/0.25·64) = −128
    #        y = round((128·x_q − 128)/64) = [4, −4] → ·0.25 = [1, −1] (the float LayerNorm's value)
    assert norm(1.0)(x, in_q, out_q).tolist() == [[1.0, -1.0]]
    # γ = 0.3: A = 0.6 → N = 8, M = floor(153.6) = 153; B = round(−0.6·256) = −154
    #          y = round((153·x_q − 154)/256) = round([1.19, −1.20]) = [1, −1] → [0.25, −0.25]
    assert norm(0.3)(x, in_q, out_q).tolist() == [[0.25, -0.25]]


def test_float_layernorm_when_off_or_without_quantizers():
    x = torch.tensor([[0.3, -0.1], [1.0, 0.2]])
    ln, in_q, out_q = norm(0.7), quantizer([0.1, 0.1]), quantizer([0.25])
    expected = F.layer_norm(x, (2,), ln.weight, ln.bias, ln.eps)
    with quant_disabled(ln):
        torch.testing.assert_close(ln(x, in_q, out_q), expected)
    torch.testing.assert_close(ln(x), expected)  # no input quantizer: nothing to read the grid from
    with quant_disabled(in_q):
        torch.testing.assert_close(ln(x, in_q, out_q), expected)
    float_ln = QLayerNorm.from_float(nn.LayerNorm(2), QuantConfig(int_layernorm=False))
    torch.testing.assert_close(float_ln(x, in_q, out_q), F.layer_norm(x, (2,), eps=float_ln.eps))
