"""QLinear / QConv2d: per-output-channel weight fake-quant and bias correction, against values worked by hand."""
import pytest
import torch
from torch import nn

from evolq_pl.layers import QConv2d, QLinear
from evolq_pl.quant import QuantConfig, calibrate

W2 = QuantConfig(w_bits=2, bias_correction=False)  # uint2 grid 0..3, per-channel min-max


def qlinear(cfg: QuantConfig = W2) -> QLinear:
    lin = nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[-1.0, 0.4, 2.0], [0.0, 0.6, 1.5]]))
        lin.bias.copy_(torch.tensor([0.1, -0.2]))
    layer = QLinear.from_float(lin, cfg)
    calibrate(layer, [torch.zeros(1, 3)])
    return layer


def test_qlinear_by_hand():
    layer = qlinear()
    # row 0: range [−1, 2] → s = 1, z = 1: codes 0, round(1.4) = 1, 3 → ŵ = [−1, 0, 2]
    # row 1: range [0, 1.5] → s = 0.5, z = 0: codes 0, round(1.2) = 1, 3 → ŵ = [0, 0.5, 1.5]
    wq = layer.weight_quantizer
    assert wq.scale.tolist() == [1.0, 0.5] and wq.zero_point.tolist() == [1.0, 0.0]
    x = torch.tensor([[1.0, 2.0, 3.0]])
    # −1 + 0 + 6 + 0.1 = 5.1; 0 + 1 + 4.5 − 0.2 = 5.3
    torch.testing.assert_close(layer(x), torch.tensor([[5.1, 5.3]]))


def test_qlinear_follows_a_changed_scale():
    layer = qlinear()
    x = torch.tensor([[1.0, 2.0, 3.0]])
    layer(x)  # caches ŵ
    layer.weight_quantizer.set_scale(torch.tensor([0.5, 0.5]))
    # row 0 with s = 0.5, z = 1: −1/0.5 + 1 = −1 → 0 → −0.5; 0.8 + 1 = 1.8 → 2 → 0.5; 4 + 1 = 5 → 3 → 1.0
    # −0.5 + 1 + 3 + 0.1 = 3.6
    torch.testing.assert_close(layer(x), torch.tensor([[3.6, 5.3]]))


def test_qlinear_bias_correction_restores_each_row():
    layer = qlinear(QuantConfig(w_bits=2, bias_correction=True))
    w_hat = torch.tensor([[-1.0, 0.0, 2.0], [0.0, 0.5, 1.5]])  # the codes above, dequantized
    w = layer.weight.detach()
    mu, sd, mu_h, sd_h = w.mean(1, True), w.std(1, keepdim=True), w_hat.mean(1, True), w_hat.std(1, keepdim=True)
    expected = ((w_hat - mu_h) * (sd / (sd_h + 1e-8)) + mu_h) - mu_h + mu
    torch.testing.assert_close(layer.quantized_weight(), expected, rtol=0, atol=0)
    torch.testing.assert_close(layer.quantized_weight().mean(1), w.mean(1))


def test_qconv2d_by_hand():
    conv = nn.Conv2d(1, 2, (1, 3), bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[-1.0, 0.4, 2.0], [0.0, 0.6, 1.5]]).reshape(2, 1, 1, 3))
    layer = QConv2d.from_float(conv, W2)
    calibrate(layer, [torch.zeros(1, 1, 1, 3)])
    x = torch.tensor([1.0, 2.0, 3.0]).reshape(1, 1, 1, 3)
    # the same rows as the Linear: ŵ = [−1, 0, 2] and [0, 0.5, 1.5] per output channel
    torch.testing.assert_close(layer(x).flatten(), torch.tensor([5.0, 5.5]))
    expected = torch.tensor([[-1.0, 0.0, 2.0], [0.0, 0.5, 1.5]]).reshape(2, 1, 1, 3)
    assert torch.equal(layer.quantized_weight(), expected)


def test_uncalibrated_layer_refuses():
    layer = QLinear.from_float(nn.Linear(3, 2), W2)
    with pytest.raises(RuntimeError, match="before calibration"):
        layer(torch.zeros(1, 3))


class _Given(QLinear):
    """A subclass taking its weight from elsewhere through the layers' one hook."""

    given = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])

    def quantized_weight(self) -> torch.Tensor:
        return self.given


def test_quantized_weight_is_the_one_hook_and_only_when_quantizing():
    layer = qlinear()
    layer.__class__ = _Given
    x = torch.tensor([[1.0, 2.0, 3.0]])
    torch.testing.assert_close(layer(x), torch.tensor([[1.1, 2.8]]))  # x·givenᵀ + b: 1 + 0.1, 3 − 0.2
    wq = layer.weight_quantizer
    wq.enabled = False  # quantization off: the float weight, the hook is not asked
    torch.testing.assert_close(layer(x), torch.tensor([[-1.0 + 0.8 + 6.0 + 0.1, 1.2 + 4.5 - 0.2]]))
    wq.enabled, wq.calibrating = True, True  # calibrating: the float weight, observed
    torch.testing.assert_close(layer(x), torch.tensor([[5.9, 5.5]]))


def test_cached_weight_is_plain_in_any_mode():
    layer = qlinear()  # its weight requires grad, as a converted model's does
    with torch.enable_grad():
        trained = layer.quantized_weight()  # a weight being trained: computed with autograd, not cached
    assert trained.requires_grad and layer._qweight is None
    with torch.inference_mode():  # Lightning's validation
        layer(torch.ones(1, 3))
    assert not layer._qweight.is_inference() and layer._qweight.grad_fn is None
    with torch.no_grad():
        assert layer.quantized_weight() is layer._qweight  # and it stays cached
