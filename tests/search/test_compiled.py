"""Compiled evaluation (inductor) against eager: the same bits, no recompiles between candidates, the fallback
without a working compiler, and the ``auto`` rule worked by hand."""
import pytest
import torch
from torch._dynamo.utils import counters

from evolq_pl import QuantConfig, calibrate, create_quant_model
from evolq_pl.layers import linear
from evolq_pl.models import search_units
from evolq_pl.quant.exact import exact_compiled
from evolq_pl.search import FitnessEvaluator, SearchConfig, SearchDriver
from evolq_pl.models.random_weights import randomize_
from tests.search.helpers import tiny_model

# the search-speed benchmark's DeiT shape at depth 2: on these weights and images a plain compile moves codes (the
# integer LayerNorm's sqrt in block 0; softmax and GELU elsewhere), so the test fails without exact_compiled
DEIT = dict(img_size=28, patch_size=4, in_chans=1, num_classes=10, embed_dim=64, depth=2, num_heads=4)


def _deit(**quant) -> tuple[torch.nn.Module, list[torch.Tensor]]:
    model = randomize_(create_quant_model("deit_tiny_patch16_224", QuantConfig(w_bits=4, **quant), **DEIT))
    batches = [torch.randn(100, 1, 28, 28, generator=torch.Generator().manual_seed(0))]
    calibrate(model, batches)
    return model, batches


@pytest.fixture(scope="module")
def compiler() -> None:
    """Skip where inductor cannot compile at all (no C++ compiler): the fallback test covers such machines."""
    try:
        torch.compile(lambda x: x + 1, backend="inductor")(torch.ones(2))
    except Exception as err:  # noqa: BLE001 (any failure means no compiled path here)
        pytest.skip(f"inductor cannot compile on this machine ({type(err).__name__})")


def _compiled_equals_eager(kind: str) -> None:
    torch._dynamo.reset()
    counters.clear()
    model, batches = _deit(lis=kind == "deit_lis") if kind.startswith("deit") else tiny_model(kind)
    eager = FitnessEvaluator(model, batches, SearchConfig(compile_backend=None))
    compiled = FitnessEvaluator(model, batches, SearchConfig(compile_backend="inductor"))
    units = search_units(model)
    for unit in units[-2:]:
        assert all(torch.equal(a, b) for a, b in zip(compiled.outputs(unit), eager.outputs(unit)))
        assert compiled(unit) == eager(unit)
    assert compiled.compile_backend == "inductor" and compiled.compile_seconds > 0
    graphs = counters["stats"]["unique_graphs"]
    if kind == "deit":  # the suffixes run both blocks (one shared graph) and the tail: no graph break anywhere
        assert graphs == 2 and not counters["graph_break"]
    unit = units[-1]
    before = compiled(unit)
    unit.set(unit.get() * 1.01)  # a candidate: new scale values, the same graphs, the refreshed weights read
    after = compiled(unit)
    assert after != before and after == eager(unit) and counters["stats"]["unique_graphs"] == graphs


def test_compiled_calls_refresh_only_the_changed_weights(compiler, monkeypatch):
    torch._dynamo.reset()
    model, batches = _deit()
    compiled = FitnessEvaluator(model, batches, SearchConfig(compile_backend="inductor"))
    unit = search_units(model)[0]
    compiled(unit)  # compiles; every weight cached
    # every weight fake-quant ends in the bias correction, eager or inside a compiled graph (the opaque op's body)
    corrected: list[torch.Size] = []
    original = linear.bias_correct
    monkeypatch.setattr(linear, "bias_correct", lambda w, w_hat: corrected.append(w.shape) or original(w, w_hat))
    compiled(unit)
    assert corrected == []  # nothing changed: no weight is fake-quantized again (the graphs read the cache)
    unit.set(unit.get() * 1.01)
    value = compiled(unit)
    attn = model.blocks[0].attn
    assert sorted(corrected) == sorted([attn.qkv.weight.shape, attn.proj.weight.shape])  # the unit's own, once
    assert value == FitnessEvaluator(model, batches, SearchConfig(compile_backend=None))(unit)


def test_a_layer_compiled_by_the_user_reads_its_current_weight(compiler):
    """Outside ``exact_compiled`` a compiled layer computes its current weight (the cache check runs eagerly, at a
    graph break: never stale) with inductor's kernels (close to eager, not promised equal); inside, it reads the
    weight pinned on entry and equals eager bit for bit."""
    torch._dynamo.reset()
    model, _ = _deit()
    lin = model.blocks[0].attn.qkv
    compiled = torch.compile(lin, backend="inductor")
    x = torch.randn(7, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = lin(x)  # caches the weight
        torch.testing.assert_close(compiled(x), before)
        with exact_compiled(lin):
            assert torch.equal(compiled(x), before)
        lin.weight_quantizer.set_scale(lin.weight_quantizer.scale * 1.01)
        outside = compiled(x)  # before any eager call: the cache holds the old weight
        after = lin(x)
        assert (after - before).abs().max() > 1e-3  # a stale weight would show
        torch.testing.assert_close(outside, after, rtol=0, atol=1e-5)
        with exact_compiled(lin):
            assert torch.equal(compiled(x), after)


@pytest.mark.parametrize("kind", ["deit", "deit_lis"])  # deit_lis: the 4-bit log-int softmax
def test_compiled_forward_equals_eager_bit_for_bit(kind, compiler):
    _compiled_equals_eager(kind)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["levit", "swin"])
def test_compiled_forward_equals_eager_bit_for_bit_other_models(kind, compiler):
    _compiled_equals_eager(kind)


def test_no_working_compiler_falls_back_to_eager(monkeypatch):
    torch._dynamo.reset()
    monkeypatch.setattr(torch._inductor.config.cpp, "cxx", ("/nonexistent/c++",))
    model, batches = tiny_model("deit")
    ev = FitnessEvaluator(model, batches, SearchConfig(compile_backend="inductor"))
    unit = search_units(model)[-1]
    with pytest.warns(RuntimeWarning, match="compile_backend='inductor': compiling the quantized forward failed") as w:
        value = ev(unit)
        ev(unit)
    assert len(w) == 1  # warned once
    assert ev.compile_backend is None and value == FitnessEvaluator(model, batches, SearchConfig(compile_backend=None))(unit)


class FakeClock:
    """Advances by the seconds a full evaluation takes on the evaluator's current path (eager or compiled)."""

    def __init__(self, ev: FitnessEvaluator, eager: float, compiled: float) -> None:
        self.ev, self.eager, self.compiled, self.now, self.calls = ev, eager, compiled, 0.0, 0

    def __call__(self) -> float:
        self.calls += 1
        if self.calls % 2 == 0:  # the end of a timed evaluation
            self.now += self.eager if self.ev.compile_backend is None else self.compiled
        return self.now


@pytest.mark.parametrize("eager, compiled, evaluations, choice", [
    (0.4, 0.2, 299, "eager"),  # 119.6 s eager: too short to try a compile
    (0.4, 0.2, 300, "inductor"),  # long enough, and compiled measured faster
    (0.4, 0.5, 3000, "eager"),  # long enough, but compiled measured slower on this machine
])
def test_auto_keeps_the_path_measured_faster(eager, compiled, evaluations, choice):
    model, batches = tiny_model("deit")
    ev = FitnessEvaluator(model, batches)
    assert ev.compile_backend == "auto"
    ev.clock = FakeClock(ev, eager, compiled)
    ev.plan(evaluations)
    d = ev.compile_decision
    assert d["choice"] == choice and ev.compile_backend == (None if choice == "eager" else "inductor")
    assert d["eager_evaluation_s"] == pytest.approx(eager) and d["evaluations"] == evaluations
    assert d["expected_eager_search_s"] == pytest.approx(eager * evaluations)
    if evaluations >= 300:  # the trial timed a warm-up call and a compiled call
        assert d["compiled_evaluation_s"] == pytest.approx(compiled) and "compile_s" in d


def test_auto_respects_a_time_budget():
    model, batches = tiny_model("deit")
    ev = FitnessEvaluator(model, batches)
    ev.clock = FakeClock(ev, 1.0, 0.5)
    ev.plan(1000, max_seconds=100.0)
    assert ev.compile_backend is None and ev.compile_decision["expected_eager_search_s"] == 100.0


def test_driver_plans_the_evaluations_left():
    model, batches = tiny_model("deit")
    units = search_units(model)
    driver = SearchDriver(units, SearchConfig(passes=2, cycles=3), FitnessEvaluator(model, batches))
    assert driver.remaining_evaluations == 2 * len(units) * 3
    driver.step()
    assert driver.remaining_evaluations == (2 * len(units) - 1) * 3
    capped = SearchDriver(units, SearchConfig(passes=2, cycles=3, max_evaluations=4), FitnessEvaluator(model, batches))
    assert capped.remaining_evaluations == 4
    assert driver.evaluator.compile_backend is None  # planned at start(): a tiny search stays eager


def test_auto_plans_for_the_steps_a_trainer_will_run():
    """(issue 27, 6: ``auto`` compiled for 21 s under ``fast_dev_run`` to run 3 evaluations)"""
    from types import SimpleNamespace

    from evolq_pl.lightning import EvolQModule
    model, batches = tiny_model("deit")
    units = search_units(model)
    driver = SearchDriver(units, SearchConfig(passes=50, cycles=3), FitnessEvaluator(model, batches))
    driver.evaluator.clock = FakeClock(driver.evaluator, 1.0, 0.5)  # the whole schedule would try a compile
    driver.start(max_steps=1)
    assert driver.evaluator.compile_decision["evaluations"] == 3 and driver.evaluator.compile_backend is None
    # what Lightning sets under fast_dev_run=True (max_steps=1, limit_train_batches=1), max_steps on a resumed
    # run (counted from the driver's restored position: the loops' global_step is restored only after fit
    # starts), and no limit (max_steps=-1, limit_train_batches=1.0)
    module = lambda position, **kw: SimpleNamespace(  # noqa: E731
        trainer=SimpleNamespace(global_step=0, **kw),
        search_run=SimpleNamespace(driver=SimpleNamespace(position=position)))
    assert EvolQModule._steps_left(module(0, max_steps=1, limit_train_batches=1)) == 1
    assert EvolQModule._steps_left(module(4, max_steps=10, limit_train_batches=1.0)) == 6
    assert EvolQModule._steps_left(module(0, max_steps=-1, limit_train_batches=1.0)) is None


def test_unknown_backend_is_refused_early():
    with pytest.raises(ValueError, match="search.compile_backend='no_such_backend': unknown; accepted: auto, null"):
        SearchConfig(compile_backend="no_such_backend")


@pytest.mark.parametrize("text", ["None", "null"])
def test_null_from_the_command_line_means_eager(text):
    assert SearchConfig(compile_backend=text).compile_backend is None
