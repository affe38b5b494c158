"""Quantizer math against values computed by hand."""
import pytest
import torch

from evolq_pl.quant.functional import (affine_params, bias_correct, fake_quant, int_layernorm, log2_quant,
                                       log_int_softmax)


def test_asymmetric_params_and_fake_quant_by_hand():
    # uint2: grid 0..3. range [-1, 3] → s = 4/3, z = −round(−0.75) = 1
    s, z = affine_params(torch.tensor([-1.0]), torch.tensor([3.0]), 0, 3, symmetric=False)
    assert s.item() == pytest.approx(4 / 3) and z.item() == 1.0
    x = torch.tensor([2.0, -5.0, 100.0, 0.0])
    # 2/(4/3)+1 = 2.5 → round-half-even 2 → (2−1)·4/3; −5 clamps to 0 → −4/3; 100 clamps to 3 → 8/3; 0 → 0
    expected = torch.tensor([4 / 3, -4 / 3, 8 / 3, 0.0])
    torch.testing.assert_close(fake_quant(x, s, z, 0, 3), expected)


def test_symmetric_divides_by_half_range():
    # int4: max(|−3|, 1.5) / 7.5 = 0.4 (not /7); 3.0/0.4 = 7.5 → round 8 → clamp 7 → 2.8
    s, z = affine_params(torch.tensor([-3.0]), torch.tensor([1.5]), -8, 7, symmetric=True)
    assert s.item() == pytest.approx(0.4) and z.item() == 0.0
    assert fake_quant(torch.tensor([3.0]), s, z, -8, 7).item() == pytest.approx(2.8)


def test_degenerate_range_keeps_constant_representable():
    s, z = affine_params(torch.tensor([1.0]), torch.tensor([1.0]), 0, 255, symmetric=False)
    assert fake_quant(torch.tensor([1.0]), s, z, 0, 255).item() == pytest.approx(1.0)


def test_log2_quant_by_hand():
    # −log2(0.3) = 1.74 → 2 → 0.25; −log2(0.9) = 0.15 → 0 → 1; −log2(1e−6) = 19.9 → 20 ≥ 2^2 → 0
    out = log2_quant(torch.tensor([0.3, 0.9, 1e-6]), bits=2)
    torch.testing.assert_close(out, torch.tensor([0.25, 1.0, 0.0]))


def test_log_int_softmax_is_power_of_two_softmax():
    torch.manual_seed(0)
    scale = 0.05
    logits = torch.round(torch.randn(4, 16) * 40) * scale  # on the integer grid of `scale`
    p = logits.softmax(-1)
    lis = log_int_softmax(logits, scale, bits=4)
    nonzero = lis > 0
    exps = torch.log2(lis[nonzero])
    assert torch.equal(exps, torch.round(exps)) and exps.max() <= 0 and exps.min() >= -15
    # log-rounding of 1/p keeps each value within a factor √2-ish of the softmax (plus integer exp error)
    ratio = torch.log2(lis[nonzero] / p[nonzero]).abs()
    assert ratio.max() < 0.75
    assert (p[~nonzero] < 2**-15).all()


def test_bias_correction_restores_channel_mean_and_std():
    torch.manual_seed(0)
    w = torch.randn(5, 7)
    w_hat = torch.round(w * 2) / 2 + 0.3  # a crude, biased quantization
    out = bias_correct(w, w_hat)
    torch.testing.assert_close(out.mean(1), w.mean(1), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std(1), w.std(1), atol=1e-5, rtol=0)


def test_int_layernorm_close_to_float_at_8_bits():
    torch.manual_seed(0)
    c = 64
    x = torch.randn(3, 10, c) * torch.linspace(0.2, 3, c)
    gamma, beta = 0.5 + torch.rand(c), torch.randn(c) * 0.1
    # PTF-like per-channel input scales (powers of two of a base), output scale of a uint8 quantizer
    in_scale = (x.abs().amax(dim=(0, 1)) * 2 / 255).clamp_min(1e-3)
    in_scale = in_scale.max() * torch.exp2(-torch.round(torch.log2(in_scale.max() / in_scale)).clamp(0, 3))
    x_grid = torch.round(x / in_scale) * in_scale
    ref = torch.nn.functional.layer_norm(x_grid, (c,), gamma, beta, eps=0.0)
    out_scale = torch.tensor(ref.abs().max().item() * 2 / 255)
    y = int_layernorm(x_grid, in_scale, out_scale, gamma, beta)
    # error: half an output step from rounding + 8-bit multiplier error (≤ 2^-7 relative)
    assert (y - ref).abs().max() <= out_scale * 0.5 + ref.abs().max() * 2**-6
    assert torch.allclose(torch.round(y / out_scale) * out_scale, y)  # on the output grid
