"""SearchRun (no Lightning): a run restored from its state_dict halfway equals an uninterrupted one, and a state of
another search, or of other calibration images, is refused naming the field."""
import pytest
import torch

from evolq_pl import QuantConfig, create_quant_model
from evolq_pl.errors import EvolQError
from evolq_pl.models.random_weights import randomize_
from evolq_pl.quant import snapshot_scales
from evolq_pl.search import SearchConfig
from evolq_pl.search.calibration import CalibrationData
from evolq_pl.search.run import SearchRun
from evolq_pl.search.state import CheckpointMismatchError
from tests.search.helpers import TINY

CPU = torch.device("cpu")


def fresh(cfg: SearchConfig, selection: str = "calibration") -> SearchRun:
    name, kw, _ = TINY["deit"]
    return SearchRun(randomize_(create_quant_model(name, QuantConfig(w_bits=3), **kw), 1), cfg, selection)


def calib(seed: int = 0) -> CalibrationData:
    x = torch.randn(64, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    return CalibrationData(x, torch.zeros(64, dtype=torch.long), batch_size=32)


def shard(batches):
    return {"batches": list(batches), "reduce": None}


def start(run: SearchRun, data: CalibrationData) -> float:
    return run.start(data, shard, CPU, test_top1=lambda: 0.0)


def test_restored_halfway_equals_uninterrupted():
    cfg = SearchConfig(passes=2, seed=3)
    whole = fresh(cfg)
    start(whole, calib())
    while not whole.driver.done:
        whole.step()
    whole.finish()

    first = fresh(cfg)
    start(first, calib())
    for _ in range(3):
        first.step()
    state, scales = first.state_dict(), snapshot_scales(first.model)
    resumed = fresh(cfg)  # a new process: the model's scales come from the checkpoint's state dict
    resumed.model.load_state_dict(first.model.state_dict())
    resumed.load_state_dict(state, resuming=True)
    assert resumed.init_scales is state["init_scales"] and resumed.driver.position == 3
    start(resumed, calib())  # calibrated already: not recalibrated over the searched scales
    assert all(torch.equal(a, b) for a, b in zip(snapshot_scales(resumed.model).values(), scales.values()))
    while not resumed.driver.done:
        resumed.step()
    resumed.finish()
    assert resumed.driver.fitness == whole.driver.fitness
    assert [h["fitness"] for h in resumed.driver.history] == [h["fitness"] for h in whole.driver.history]
    assert all(torch.equal(a, b) for a, b in zip(snapshot_scales(resumed.model).values(),
                                                 snapshot_scales(whole.model).values()))


def test_a_state_of_another_search_or_other_images_is_refused():
    run = fresh(SearchConfig(passes=1, seed=0))
    start(run, calib())
    state = run.state_dict()
    with pytest.raises(CheckpointMismatchError, match=r"^checkpoint search config does not match this run "
                                                      r"\(seed: checkpoint=0, config=1\)$"):
        fresh(SearchConfig(passes=1, seed=1)).load_state_dict(state, resuming=True)
    other = fresh(SearchConfig(passes=1, seed=0))
    other.load_state_dict(state, resuming=True)
    with pytest.raises(CheckpointMismatchError, match=r"^checkpoint calibration data does not match this run \(sha256"):
        start(other, calib(seed=1))
    # outside a resume (validate, export) only the initial scales are taken: no search setting is checked
    kept = fresh(SearchConfig(passes=1, seed=1))
    kept.load_state_dict(state, resuming=False)
    assert kept.init_scales is state["init_scales"] and kept.driver.position == 0


def test_holdout_selection_without_held_out_images_is_named():
    run = fresh(SearchConfig(passes=1), selection="holdout")
    with pytest.raises(EvolQError, match="calibration_data\\(\\) has no held-out images"):
        start(run, calib())
