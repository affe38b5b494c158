"""Quantizer math against values computed by hand."""
import math

import pytest
import torch

from evolq_pl.quant import functional as F
from evolq_pl.quant.functional import (affine_params, bias_correct, fake_quant, int_layernorm, log_int_softmax,
                                       quant_codes)


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


def test_codes_are_the_fake_quant_grid():
    s, z = torch.tensor([0.5]), torch.tensor([2.0])
    x = torch.tensor([-3.0, 0.26, 1.0, 9.0])
    q = quant_codes(x, s, z, 0, 7)  # −6+2 → 0 (clamped); 0.52+2 → 3; 2+2 → 4; 18+2 → 7 (clamped)
    assert q.tolist() == [0.0, 3.0, 4.0, 7.0]
    torch.testing.assert_close(fake_quant(x, s, z, 0, 7), (q - z) * s)


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


def test_bias_correction_in_the_published_operation_order():
    torch.manual_seed(1)
    w = torch.randn(64, 48)
    w_hat = torch.round(w * 3) / 3
    mu, sd = w.mean(1, keepdim=True), w.std(1, keepdim=True)
    mu_hat, sd_hat = w_hat.mean(1, keepdim=True), w_hat.std(1, keepdim=True)
    published = ((w_hat - mu_hat) * (sd / (sd_hat + 1e-8)) + mu_hat) - mu_hat + mu  # reference §5, step by step
    assert torch.equal(bias_correct(w, w_hat), published)
    shorter = (w_hat - mu_hat) * sd / (sd_hat + 1e-8) + mu  # the same algebra: differs in last bits
    assert not torch.equal(shorter, published)


def test_int_layernorm_step_by_step():
    """Reference §4.3 written out step by step (mean of the codes times s_min)."""
    torch.manual_seed(2)
    c = 48
    in_scale = 0.01 * torch.exp2(torch.randint(0, 4, (c,)).float())
    x = torch.round(torch.randn(4, 9, c) * 3 / in_scale) * in_scale
    gamma, beta, out_scale = 0.5 + torch.rand(c), torch.randn(c) * 0.1, torch.tensor(0.03)
    s_min = in_scale.min()
    x_q = torch.round(x / in_scale) * torch.round(in_scale / s_min)
    mean = x_q.mean(-1, keepdim=True) * s_min
    std = (s_min / c) * torch.sqrt(c * (x_q**2).sum(-1, keepdim=True) - x_q.sum(-1, keepdim=True) ** 2)
    a = (s_min / std) * gamma / out_scale
    n = torch.clamp(7 - torch.floor(torch.log2(a.abs())), 0, 31)
    m = torch.clamp(torch.floor(a.abs() * 2**n), 0, 255)
    b = torch.round((beta - (mean / std) * gamma) / out_scale * 2**n)
    expected = torch.round((torch.sign(a) * m * x_q + b) / 2**n) * out_scale
    assert torch.equal(int_layernorm(x, in_scale, out_scale, gamma, beta), expected)


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


def test_pow2_is_exact_for_integer_exponents():
    n = torch.cat([torch.arange(-200.0, 201.0), torch.tensor([float("inf"), -float("inf")])])
    expected = torch.tensor([math.ldexp(1.0, int(k)) if abs(k) < 1000 else (math.inf if k > 0 else 0.0)
                             for k in n.tolist()]).float()  # 2^k by hand (float32: 0 below 2^-149, inf above 2^127)
    assert torch.equal(F._pow2(n), expected)
    assert torch.equal(F._pow2(n), torch.pow(2.0, n))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_all_finite_sees_one_bad_value_anywhere(bad):
    x = torch.randn(3, 5, 7)
    assert F.all_finite(x) and F.all_finite(torch.zeros(0))
    for i in (0, 52, 104):
        y = x.clone()
        y.view(-1)[i] = bad
        assert not F.all_finite(y) and not F.all_finite(y.transpose(0, 2))


def test_fake_quant_into_a_buffer_is_the_fresh_result():
    x = torch.randn(6, 40).t()  # non-contiguous, as a per-channel (C, M) view is
    s, z = torch.full((40, 1), 0.05), torch.full((40, 1), 7.0)
    buf = torch.full((40, 6), math.nan)
    fresh = fake_quant(x, s, z, 0, 15)
    assert fake_quant(x, s, z, 0, 15, buf) is buf and torch.equal(buf, fresh) and buf.is_contiguous()


def test_codes_of_a_transposed_view_come_out_contiguous():
    x = torch.randn(6, 40).t()  # (40, 6), strides (1, 40)
    s, z = torch.full((40, 1), 0.05), torch.full((40, 1), 7.0)
    assert F.layout_buffer(x.contiguous(), s) is None and F.layout_buffer(x, s).is_contiguous()
    q = F.quant_codes(x, s, z, 0, 15)
    assert q.is_contiguous() and torch.equal(q, F.quant_codes(x.contiguous(), s, z, 0, 15))
