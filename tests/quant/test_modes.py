"""Context managers restore state; calibrate() rejects bad input."""
import pytest
import torch
from torch import nn

from evolq_pl.layers import QLinear
from evolq_pl.quant import QuantConfig, calibrate, calibration_mode, quant_disabled


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(QLinear.from_float(nn.Linear(4, 3), QuantConfig(w_bits=4)))


def test_calibration_mode_restores_and_finalizes():
    m = _tiny()
    wq = m[0].weight_quantizer
    with calibration_mode(m):
        assert wq.calibrating and not wq.enabled
        m(torch.randn(2, 4))
    assert not wq.calibrating and wq.enabled and wq.calibrated


def test_calibration_mode_exception_restores_without_finalizing():
    m = _tiny()
    with pytest.raises(KeyError):
        with calibration_mode(m):
            m(torch.randn(2, 4))
            raise KeyError("boom")
    assert not m[0].weight_quantizer.calibrating and not m[0].weight_quantizer.calibrated


def test_quant_disabled_gives_float_and_restores():
    m = _tiny()
    x = torch.randn(5, 4)
    calibrate(m, [x])
    with quant_disabled(m):
        torch.testing.assert_close(m(x), nn.functional.linear(x, m[0].weight, m[0].bias))
    assert m[0].weight_quantizer.enabled
    assert not torch.allclose(m(x), nn.functional.linear(x, m[0].weight, m[0].bias))


def test_quant_disabled_only_a_subset():
    torch.manual_seed(0)
    m = nn.Sequential(QLinear.from_float(nn.Linear(4, 3), QuantConfig(w_bits=3)),
                      QLinear.from_float(nn.Linear(3, 2), QuantConfig(w_bits=3)))
    x = torch.randn(5, 4)
    calibrate(m, [x])
    # second layer float, first still quantized: by hand from the first layer's quantized weight
    expected = nn.functional.linear(m[0](x), m[1].weight, m[1].bias)
    with quant_disabled(m, only=[m[1].weight_quantizer]):
        assert m[0].weight_quantizer.enabled and not m[1].weight_quantizer.enabled
        torch.testing.assert_close(m(x), expected)
    assert m[1].weight_quantizer.enabled
    assert not torch.allclose(m(x), expected)


def test_calibrate_bad_inputs():
    m = _tiny()
    with pytest.raises(ValueError, match="empty iterable"):
        calibrate(m, [])
    with pytest.raises(ValueError, match="batch 1 contains NaN"):
        calibrate(m, [torch.randn(2, 4), torch.tensor([[float("nan")] * 4])])
    with pytest.raises(ValueError, match="no quantizers"):
        calibrate(nn.Linear(2, 2), [torch.randn(1, 2)])
