"""Observers: scale/zero point on small tensors by hand; OMSE grid and PTF factor choice."""
import numpy as np
import pytest
import torch

from evolq_pl.quant import BitType, QuantConfig, UnsupportedBitWidthError, UniformQuantizer, build_observer

U2, U8 = BitType(2), BitType(8)


def test_bit_types():
    assert (BitType(3).lower, BitType(3).upper) == (0, 7)
    assert (BitType(4, True).lower, BitType(4, True).upper) == (-8, 7)
    assert BitType.parse("int8") == BitType(8, True)
    with pytest.raises(UnsupportedBitWidthError, match="bit width 9 .*2..8"):
        BitType(9)


def test_minmax_accumulates_over_batches_per_channel():
    obs = build_observer("minmax", U2, per_channel=True)
    obs.update(torch.tensor([[0.0, 1.0], [-2.0, 0.5]]))
    obs.update(torch.tensor([[3.0, 1.0], [-1.0, 0.0]]))
    s, z = obs.compute(torch.empty(0))
    # channel 0: [0, 3] → s = 1, z = 0; channel 1: [−2, 0.5] → s = 2.5/3, z = −round(−2/(2.5/3)) = 2
    torch.testing.assert_close(s, torch.tensor([1.0, 2.5 / 3]))
    torch.testing.assert_close(z, torch.tensor([0.0, 2.0]))


def test_minmax_per_tensor_collapses():
    obs = build_observer("minmax", U2, per_channel=False)
    obs.update(torch.tensor([[0.0, 1.0], [-3.0, 0.5]]))
    s, z = obs.compute(torch.empty(0))
    assert s.shape == (1,) and s.item() == pytest.approx(4 / 3) and z.item() == 2.0


def test_ema_moves_one_percent():
    obs = build_observer("ema", U8, per_channel=False)
    obs.update(torch.tensor([[0.0, 10.0]]))
    obs.update(torch.tensor([[-10.0, 20.0]]))
    assert obs.min_val.item() == pytest.approx(-0.1) and obs.max_val.item() == pytest.approx(10.1)


def test_omse_picks_first_minimum_of_shared_shrink_grid():
    torch.manual_seed(0)
    x = torch.cat([torch.randn(2, 200), torch.tensor([[12.0], [-9.0]])], dim=1)  # outliers → clipping pays
    obs = build_observer("omse", BitType(3), per_channel=True)
    obs.update(x)
    s, z = obs.compute(x)
    # independent numpy brute force over f = 1.00 … 0.11
    xn, lo, hi = x.numpy().astype(np.float64), x.min(1).values.numpy(), x.max(1).values.numpy()
    best = None
    for i in range(90):
        f = 1 - 0.01 * i
        sc = (f * hi - f * lo) / 7
        zp = np.clip(-np.round(f * lo / sc), 0, 7)
        err = (((np.clip(np.round(xn / sc[:, None] + zp[:, None]), 0, 7) - zp[:, None]) * sc[:, None] - xn) ** 2).mean()
        if best is None or err < best[0] - 1e-12:
            best = (err, sc, zp, f)
    assert best[3] < 1.0  # the outliers make shrinking worthwhile
    np.testing.assert_allclose(s.numpy(), best[1], rtol=1e-5)
    np.testing.assert_allclose(z.numpy(), best[2])


def test_ptf_chooses_power_of_two_factor_per_channel():
    # channel 0 spans 0..255 (needs s8 = 1), channel 1 lies on the 0.125 grid within 0..31.875 (fits s1)
    ch0 = torch.arange(256.0)
    ch1 = torch.arange(256.0) * 0.125
    x = torch.stack([ch0, ch1])  # (C=2, M)
    obs = build_observer("ptf", U8, per_channel=True)
    obs.update(x)
    s, z = obs.compute(x)
    torch.testing.assert_close(s, torch.tensor([1.0, 0.125]))
    torch.testing.assert_close(z, torch.tensor([0.0, 0.0]))


def test_percentile_is_per_tensor_only():
    with pytest.raises(ValueError, match="per-tensor only"):
        build_observer("percentile", U8, per_channel=True)


def test_unknown_observer_named():
    with pytest.raises(ValueError, match="unknown observer 'foo'.*minmax"):
        build_observer("foo", U8, per_channel=False)
    with pytest.raises(ValueError, match="a_observer='bar'"):
        QuantConfig(a_observer="bar")


def test_config_rejects_bad_bits_and_int_ln_without_ptf():
    with pytest.raises(UnsupportedBitWidthError, match=r"quant.w_bits=1: not supported; accepted: integers 2..8"):
        QuantConfig(w_bits=1)
    with pytest.raises(ValueError, match="int_layernorm=True requires ptf=True"):
        QuantConfig(ptf=False)


def test_quantizer_per_channel_weight_broadcast_and_uncalibrated_error():
    q = UniformQuantizer(BitType(2), "minmax", per_channel=True, is_weight=True)
    w = torch.tensor([[0.0, 3.0], [0.0, 6.0]])
    with pytest.raises(RuntimeError, match="before calibration"):
        q.quantize(w)
    q.observe(w)
    q.finalize()
    torch.testing.assert_close(q.scale, torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(q(torch.tensor([[1.4, 2.6], [1.4, 2.6]])), torch.tensor([[1.0, 3.0], [2.0, 2.0]]))
