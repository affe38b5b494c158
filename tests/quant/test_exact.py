"""The compiled path's module: what ``exact_compiled`` routes to opaque ops (read off the graphs dynamo captures),
the weights it pins and puts back. Compiled against eager bit for bit: tests/search/test_compiled.py."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from evolq_pl.layers import QLinear
from evolq_pl.quant import QuantConfig, calibrate
from evolq_pl.quant import functional
from evolq_pl.quant.exact import exact_compiled
from evolq_pl.quant.quantizer import NotCalibratedError


def _captured(fn, *args) -> list[str]:
    """The call targets of the graph dynamo captures for ``fn(*args)`` (run by the captured graph itself)."""
    graphs = []

    def backend(gm: torch.fx.GraphModule, _inputs):  # noqa: ANN202
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    torch.compile(fn, backend=backend, fullgraph=True)(*args)
    return [str(n.target) for g in graphs for n in g.graph.nodes if n.op == "call_function"]


def _forward(x, w, b, img, conv_w, scale):
    """Each computation inductor would rewrite, as the core writes it."""
    y = F.gelu(F.linear(x, w, b))
    y = torch.softmax(y, dim=-1) + F.softmax(y, dim=-1) + y.softmax(-1)
    ln = functional.int_layernorm(y.round(), torch.ones(y.shape[-1]), torch.tensor(0.1), torch.ones(y.shape[-1]),
                                  torch.zeros(y.shape[-1]))
    lis = functional.log_int_softmax(y, scale)
    codes = functional.quant_codes(y.t(), torch.tensor(0.1), torch.tensor(0.0), 0, 255)  # a transposed view
    return ln, lis, codes, F.conv2d(img, conv_w, torch.ones(2), 1, 1)


ARGS = (torch.randn(4, 8), torch.randn(6, 8), torch.randn(6), torch.randn(1, 1, 5, 5), torch.randn(2, 1, 3, 3),
        torch.tensor(0.05))
OPS = {"softmax", "gelu", "linear", "conv2d", "code_moments", "pow2_multiplier", "log_int_softmax"}


def test_inside_every_rewritten_computation_is_an_opaque_op():
    with exact_compiled(nn.Module()):
        targets = _captured(_forward, *ARGS)
    ours = [t.split(".")[1] for t in targets if t.startswith("evolq_pl.")]
    assert set(ours) == OPS and ours.count("softmax") == 3  # torch.softmax, F.softmax and Tensor.softmax
    assert not any("empty" in t or "exp2" in t or "sqrt" in t for t in targets)  # no layout buffer; inside ops


def test_outside_torch_functions_stay_themselves():
    with exact_compiled(nn.Module()):
        pass  # the core functions' substitutes are registered for good; torch's functions are routed inside only
    targets = _captured(_forward, *ARGS)
    ours = {t.split(".")[1] for t in targets if t.startswith("evolq_pl.")}
    assert ours == {"code_moments", "pow2_multiplier", "log_int_softmax"}
    assert any("softmax" in t for t in targets if not t.startswith("evolq_pl."))


def test_eager_inside_gives_the_same_bits():
    x = ARGS
    expected = _forward(*x)
    with exact_compiled(nn.Module()):
        inside = _forward(*x)
    assert all(torch.equal(a, b) for a, b in zip(inside, expected))


def _qlinear(seed: int) -> QLinear:
    torch.manual_seed(seed)
    layer = QLinear.from_float(nn.Linear(8, 4), QuantConfig(w_bits=4))
    calibrate(layer, [torch.randn(2, 8)])
    return layer


def test_weights_are_pinned_on_entry_and_put_back():
    a, b = _qlinear(0), _qlinear(1)
    model = nn.Sequential(a, b)
    before = a.quantized_weight().clone()
    with exact_compiled(model):
        assert type(a).__name__ == "PinnedQLinear" and isinstance(a, QLinear)
        a.weight_quantizer.set_scale(a.weight_quantizer.scale * 2)
        assert torch.equal(a.quantized_weight(), before)  # pinned: what the compiled graphs read
        with exact_compiled(model):  # nested: the outer context's weights stay
            assert torch.equal(a.quantized_weight(), before)
        assert type(a).__name__ == "PinnedQLinear"
    assert type(a) is QLinear and type(b) is QLinear and "pinned_weight" not in a.__dict__
    assert not torch.equal(a.quantized_weight(), before)  # the new scale, from the layer's own cache


def test_a_weight_that_fails_changes_nothing():
    a, b = _qlinear(0), _qlinear(1)
    b.weight_quantizer.scale = torch.ones(0)  # uncalibrated
    with pytest.raises(NotCalibratedError), exact_compiled(nn.Sequential(a, b)):
        pass
    assert type(a) is QLinear and "pinned_weight" not in a.__dict__
