"""Landscape sweep: shape, the centre equals the unperturbed fitness, bad input, roughness by hand."""
import pytest
import torch
from PIL import Image

from evolq_pl.report.plots import plot_landscape, plot_progress
from evolq_pl.models import search_units
from evolq_pl.search import FitnessEvaluator, SearchConfig
from evolq_pl.search.landscape import SweepSpec, directions, roughness, sweep
from tests.search.helpers import tiny_model


def test_sweep_shape_and_centre(tmp_path):
    model, batches = tiny_model("deit")
    ev = FitnessEvaluator(model, batches)
    base = {loss: FitnessEvaluator(model, batches, SearchConfig(loss=loss))() for loss in ("infonce", "mse", "kl", "cosine")}
    unit = search_units(model)[1]
    before = unit.get()
    labels = [b[:, 0, 0, 0].gt(0).long() for b in batches]
    rows = sweep(unit, ev, labels, SweepSpec(unit=1, radius=0.1, steps=5, dims=1), top1_fn=lambda: 50.0)
    assert len(rows) == 5 and [r["a"] for r in rows] == pytest.approx([-0.1, -0.05, 0.0, 0.05, 0.1])
    centre = rows[2]
    for loss, value in base.items():
        assert centre[loss] == pytest.approx(value, rel=1e-6)
    assert rows[0]["infonce"] != centre["infonce"]
    assert unit.get().equal(before)  # restored
    progress = []  # (issue 27, 6: landscape ran minutes without progress)
    rows2 = sweep(unit, ev, labels, SweepSpec(unit=1, radius=0.1, steps=3, dims=2),
                  on_point=lambda done, total: progress.append((done, total)))
    assert progress == [(i, 9) for i in range(1, 10)]
    assert len(rows2) == 9 and rows2[4]["a"] == 0 and rows2[4]["b"] == 0
    assert rows2[4]["mse"] == pytest.approx(base["mse"], rel=1e-6)
    plot_landscape(rows, 1, tmp_path / "l1.png", "1-D")
    plot_landscape(rows2, 2, tmp_path / "l2.png", "2-D")
    plot_progress([{"evaluations": 3, "fitness": 1.0, "improvement": 0.1, "unit": 2}], 1.1, tmp_path / "p.png")
    for name in ("l1.png", "l2.png", "p.png"):
        with Image.open(tmp_path / name) as image:  # a real PNG with drawn content, not an empty canvas
            assert image.format == "PNG" and min(image.size) >= 300
            assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 50


@pytest.mark.parametrize("kwargs, message", [
    (dict(unit=7), "unit=7 out of range; valid: 0..2"), (dict(unit=0, steps=0), "steps=0"),
    (dict(unit=0, radius=0.0), "radius=0.0: must be > 0"), (dict(unit=0, dims=3), "dims=3"),
    (dict(unit=0, mode="log"), "mode='log': accepted relative, absolute"),
])
def test_bad_sweep_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SweepSpec(**kwargs).validate(3)


def test_roughness_by_hand():
    assert roughness([3, 2, 1, 2, 3]) == {"tv_over_range": 2.0, "local_minima": 1.0}  # one bowl
    assert roughness([0, 1, 2, 3]) == {"tv_over_range": 1.0, "local_minima": 0.0}  # monotone
    assert roughness([1, 0, 1, 0, 1]) == {"tv_over_range": 4.0, "local_minima": 2.0}  # jagged


@pytest.mark.parametrize("mode", ["relative", "absolute"])
def test_sweep_points_move_scales_as_stated(mode):
    model, batches = tiny_model("deit")
    unit = search_units(model)[0]
    s0 = unit.get().clone()
    seen = []
    original_set = unit.set
    unit.set = lambda scales: (seen.append(scales.clone()), original_set(scales))[1]
    sweep(unit, FitnessEvaluator(model, batches), [b[:, 0, 0, 0].gt(0).long() for b in batches],
          SweepSpec(unit=0, radius=2e-3, steps=3, mode=mode, seed=4))
    d = directions(s0.numel(), 1, seed=4)[0].to(s0.dtype)
    # grid −r, 0, +r, then the restore: relative s0·(1 ∓ r·d), absolute |s0 ∓ r·d|
    expected = (s0 * (1 - 2e-3 * d)).abs() if mode == "relative" else (s0 - 2e-3 * d).abs()
    assert torch.equal(seen[0], expected) and torch.equal(seen[1], s0) and torch.equal(seen[-1], s0)
