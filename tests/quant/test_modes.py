"""Context managers restore state; calibrate() rejects bad input."""
import pytest
import torch
from torch import nn

from evolq_pl.errors import EvolQError
from evolq_pl.layers import QLinear
from evolq_pl.layers.act import QAct
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


def _omse_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(QLinear.from_float(nn.Linear(4, 3), QuantConfig(w_bits=4)), QAct(QuantConfig()))


def test_failed_calibration_keeps_the_parameters_from_before():
    m = _omse_model()
    batches = [torch.randn(8, 4) for _ in range(2)]
    calibrate(m, batches)
    before = [(q.scale.clone(), q.zero_point.clone()) for q in (m[0].weight_quantizer, m[1])]
    handle = m[1].register_forward_pre_hook(lambda mod, args: (_ for _ in ()).throw(MemoryError("out of memory")))
    with pytest.raises(MemoryError):
        calibrate(m, [torch.randn(8, 4) * 5 for _ in range(2)])  # the weight quantizer finishes, the act does not
    handle.remove()
    after = [(q.scale, q.zero_point) for q in (m[0].weight_quantizer, m[1])]
    assert all(torch.equal(a, b) and torch.equal(c, d) for (a, c), (b, d) in zip(before, after))
    fresh = _omse_model()
    calibrate(fresh, batches)
    calibrate(m, batches)  # a retry equals a fresh calibration: no statistics left over from the failed one
    assert torch.equal(m[1].scale, fresh[1].scale)


def test_calibration_mode_alone_cannot_run_the_last_batch_search():
    m = _omse_model()
    with pytest.raises(EvolQError, match=r"1 quantizers not calibrated, e\.g\. 1: its omse observer .* evolq_pl\.calibrate"):
        with calibration_mode(m):
            m(torch.randn(8, 4))
    assert m[0].weight_quantizer.calibrated and not m[1].calibrated  # minmax needs no last batch


def test_calibrate_under_inference_mode():
    m = _omse_model()
    x = torch.randn(8, 4)
    with torch.inference_mode():
        calibrate(m, [x])
    assert not m[1].scale.is_inference()
    with torch.no_grad():
        m(x)  # the weight cache reads the scale's version counter


@pytest.mark.parametrize("outer", [torch.enable_grad, torch.no_grad, torch.inference_mode])
def test_calibration_builds_no_autograd_graph(outer):
    # the weights are parameters (requires_grad): a graph would keep every activation alive until the end
    # of the forward (a ViT-B calibration at batch 10 held 18x a float forward's memory that way)
    m = _tiny()
    seen: list[tuple[bool, bool]] = []
    m[0].register_forward_hook(lambda mod, args, out: seen.append((out.requires_grad, out.is_inference())))
    with outer():
        calibrate(m, [torch.randn(3, 4), torch.randn(3, 4)])
    assert seen == [(False, False), (False, False)]
    assert not m[0].weight_quantizer.scale.is_inference()


def test_scales_loaded_puts_the_current_scales_back_even_after_an_error():
    from evolq_pl.quant import scales_loaded, snapshot_scales

    m = _tiny()
    calibrate(m, [torch.randn(5, 4)])
    current = snapshot_scales(m)
    other = {k: v * 2 for k, v in current.items()}
    with pytest.raises(KeyError):
        with scales_loaded(m, other):
            assert torch.equal(m[0].weight_quantizer.scale, other["0.weight_quantizer"])
            raise KeyError("boom")
    assert torch.equal(m[0].weight_quantizer.scale, current["0.weight_quantizer"])
