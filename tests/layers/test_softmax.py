"""QSoftmax: float softmax + uniform uint8 quantizer (worked by hand), or log-int softmax, also during the
last calibration batch as in the published code."""
import torch
from torch import nn

from evolq_pl.layers import QSoftmax
from evolq_pl.quant import BitType, QuantConfig, UniformQuantizer, calibrate
from evolq_pl.quant.functional import log_int_softmax


class Attn(nn.Module):
    """logits quantizer → softmax (the order of a ViT attention)."""

    def __init__(self, cfg: QuantConfig) -> None:
        super().__init__()
        self.qact = UniformQuantizer(BitType(8), "minmax")
        self.softmax = QSoftmax(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.softmax(self.qact(x), self.qact)


def test_uniform_softmax_by_hand():
    m = Attn(QuantConfig(a_observer="minmax"))
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [-200.0, 0.0, -200.0, -200.0]])  # softmax: 1/4 each; one-hot
    calibrate(m, [logits])
    sq = m.softmax.quantizer
    # range [0, 1]: s = 1/255, z = 0; 0.25·255 = 63.75 → 64; 1 → 255; 0 → 0
    assert sq.scale.item() == torch.tensor(1 / 255).item() and sq.zero_point.item() == 0.0
    expected = torch.tensor([[64.0, 64.0, 64.0, 64.0], [0.0, 255.0, 0.0, 0.0]]) * sq.scale
    torch.testing.assert_close(m.softmax(logits), expected)


def test_log_int_softmax_in_forward_and_on_the_last_calibration_batch():
    m = Attn(QuantConfig(a_observer="minmax", lis=True))
    seen = []
    m.softmax.register_forward_hook(lambda mod, args, out: seen.append(out.clone()))
    batches = [torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(i)) * 3 for i in range(2)]
    calibrate(m, batches)
    # first batch: float softmax; last batch: the input quantizer already has its scale → log-int outputs
    torch.testing.assert_close(seen[0], batches[0].softmax(-1))
    scale = float(m.qact.scale)
    assert torch.equal(seen[1], log_int_softmax(batches[1], scale, 4))
    x = batches[0]
    assert torch.equal(m(x), log_int_softmax(m.qact(x), scale, 4))
