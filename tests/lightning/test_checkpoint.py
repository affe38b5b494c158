"""Lean search checkpoints: the float weights named by their source, not stored; resume and export unchanged."""
import json

import pytest
import torch

from evolq_pl.export.safetensors_io import export_safetensors
from evolq_pl.lightning import EvolQModule, SearchCheckpoint
from evolq_pl.search.state import CheckpointMismatchError, weights_sha256
from evolq_pl.models import create_float_model
from evolq_pl.models.factory import sha256_file
from evolq_pl.quant import QuantConfig
from evolq_pl.search import SearchConfig
from evolq_pl.models.random_weights import randomize_
from tests.lightning.test_evolq_module import KW, RandomImages, scales, trainer


def float_file(tmp_path, seed: int = 0) -> str:
    path = tmp_path / f"float{seed}.pt"
    torch.save(randomize_(create_float_model("deit_tiny_patch16_224", **KW), seed).state_dict(), path)
    return str(path)


def module(path: str, passes: int = 2, **kw) -> EvolQModule:
    return EvolQModule("deit_tiny_patch16_224", KW, checkpoint_path=path, quant=QuantConfig(w_bits=3),
                       search=SearchConfig(passes=passes, seed=0), **kw)


def load(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_lean_checkpoint_names_the_float_weights_and_stores_only_what_the_search_changes(tmp_path):
    path = float_file(tmp_path)
    m = module(path, passes=1, evaluate_at_end=False)
    trainer(tmp_path, callbacks=[SearchCheckpoint(dirpath=tmp_path / "ck")]).fit(m, datamodule=RandomImages())
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["last.ckpt"]  # one file per step
    ckpt = load(tmp_path / "ck" / "last.ckpt")
    assert ckpt["evolq"]["float_weights"] == {"checkpoint_sha256": sha256_file(path),
                                              "weights_sha256": weights_sha256(m.float_weights.weights())}
    params = {f"model.{n}" for n, _ in m.model.named_parameters()}
    assert not params & set(ckpt["state_dict"])
    quantizer_buffers = {k for k in m.state_dict() if k.endswith((".scale", ".zero_point"))}
    assert quantizer_buffers <= set(ckpt["state_dict"])
    assert m.phases.seconds["checkpoints"] > 0  # the callback's writes are charged to their phase


def test_resume_from_lean_checkpoint_equals_uninterrupted(tmp_path):
    path = float_file(tmp_path)
    full = module(path, evaluate_at_end=False)
    trainer(tmp_path / "a", enable_checkpointing=False).fit(full, datamodule=RandomImages())
    killed = module(path, evaluate_at_end=False)
    trainer(tmp_path / "b", max_steps=4, callbacks=[SearchCheckpoint(dirpath=tmp_path / "ck")]).fit(
        killed, datamodule=RandomImages())
    resumed = module(path, evaluate_at_end=False)
    trainer(tmp_path / "c", enable_checkpointing=False).fit(resumed, datamodule=RandomImages(),
                                                          ckpt_path=str(tmp_path / "ck" / "last.ckpt"))
    assert resumed.search_run.driver.position == full.search_run.driver.position == 6
    assert all(torch.equal(a, b) for a, b in zip(scales(full), scales(resumed)))
    assert resumed.search_run.driver.fitness == full.search_run.driver.fitness


def safetensors_content(path) -> tuple[dict, dict]:
    from safetensors import safe_open
    with safe_open(path, "pt") as f:
        return f.metadata(), {k: f.get_tensor(k) for k in f.keys()}


def test_export_from_lean_equals_export_from_full_checkpoint(tmp_path):
    path = float_file(tmp_path)
    for weights in ("lean", "full"):
        m = module(path, passes=1, evaluate_at_end=False, checkpoint_weights=weights)
        trainer(tmp_path, callbacks=[SearchCheckpoint(dirpath=tmp_path / weights)]).fit(m, datamodule=RandomImages())
        fresh = module(path, passes=1)
        fresh.restore(load(tmp_path / weights / "last.ckpt"))
        export_safetensors(fresh.model, tmp_path / f"{weights}.safetensors", fresh.model_name, fresh.model_kwargs)
    full = load(tmp_path / "full" / "last.ckpt")
    assert "float_weights" not in full["evolq"] and "model.head.weight" in full["state_dict"]
    lean, full = (safetensors_content(tmp_path / f"{w}.safetensors") for w in ("lean", "full"))
    assert lean[0] == full[0] and lean[1].keys() == full[1].keys()  # metadata (its order varies between writes)
    assert all(torch.equal(lean[1][k], full[1][k]) for k in lean[1])
    assert (tmp_path / "lean" / "last.ckpt").stat().st_size < (tmp_path / "full" / "last.ckpt").stat().st_size / 2


def test_other_float_weights_refused_in_one_line(tmp_path):
    m = module(float_file(tmp_path, 0), passes=1, evaluate_at_end=False)
    trainer(tmp_path, callbacks=[SearchCheckpoint(dirpath=tmp_path / "ck")]).fit(m, datamodule=RandomImages())
    ckpt = load(tmp_path / "ck" / "last.ckpt")
    other = module(float_file(tmp_path, 1), passes=1)
    with pytest.raises(CheckpointMismatchError, match=r"^the checkpoint was searched from the float weights of "
                                                      r"checkpoint_sha256 \w+; this config builds checkpoint_sha256"):
        other.restore(ckpt)
    unnamed = EvolQModule("deit_tiny_patch16_224", KW, quant=QuantConfig(w_bits=3), search=SearchConfig(passes=1))
    with pytest.raises(CheckpointMismatchError, match="random initialisation") as err:
        unnamed.restore(ckpt)
    assert "\n" not in str(err.value)


def test_same_source_other_bytes_refused_and_full_config_reads_lean(tmp_path):
    """A pretrained tag names the hub file, not a head timm re-initialises (num_classes ≠ the pretrained one): the
    lean checkpoint also stores the weights' sha256. A config asking for full checkpoints still reads lean ones."""
    path = float_file(tmp_path)
    m = module(path, passes=1, evaluate_at_end=False)
    trainer(tmp_path, callbacks=[SearchCheckpoint(dirpath=tmp_path / "ck")]).fit(m, datamodule=RandomImages())
    ckpt = load(tmp_path / "ck" / "last.ckpt")
    module(path, passes=1, checkpoint_weights="full").restore(load(tmp_path / "ck" / "last.ckpt"))
    ckpt["evolq"]["float_weights"]["weights_sha256"] = "0" * 64
    with pytest.raises(CheckpointMismatchError, match="differ from those the search started from"):
        module(path, passes=1).restore(ckpt)


def test_checkpoint_weights_value_checked():
    with pytest.raises(ValueError, match="checkpoint_weights='some': accepted: lean, full"):
        EvolQModule("deit_tiny_patch16_224", KW, checkpoint_weights="some")


def test_results_record_phase_seconds(tmp_path):
    m = module(float_file(tmp_path), passes=1, output_dir=str(tmp_path))
    trainer(tmp_path, enable_checkpointing=False).fit(m, datamodule=RandomImages())
    phases = json.loads((tmp_path / "results.json").read_text())["phase_seconds"]
    assert list(phases) == ["setup", "data", "calibration", "teacher", "search", "checkpoints", "evaluation"]
    assert all(phases[k] > 0 for k in ("setup", "calibration", "teacher", "search", "evaluation"))
    assert phases["checkpoints"] == 0.0


class OtherImages(RandomImages):
    """The same sizes, other pixels (another subset seed, in effect)."""

    def __init__(self) -> None:
        super().__init__()
        self.x = self.x.flip(0)


def test_resume_on_other_calibration_images_refused(tmp_path):
    path = float_file(tmp_path)
    killed = module(path, evaluate_at_end=False)
    trainer(tmp_path / "b", max_steps=2, callbacks=[SearchCheckpoint(dirpath=tmp_path / "ck")]).fit(
        killed, datamodule=RandomImages())
    assert load(tmp_path / "ck" / "last.ckpt")["evolq"]["calibration"]["images"] == 64
    resumed = module(path, evaluate_at_end=False)
    with pytest.raises(CheckpointMismatchError, match=r"^checkpoint calibration data does not match this run "
                                                      r"\(sha256: checkpoint='\w+', config='\w+'\)$"):
        trainer(tmp_path / "c", enable_checkpointing=False).fit(resumed, datamodule=OtherImages(),
                                                              ckpt_path=str(tmp_path / "ck" / "last.ckpt"))


def test_unwritable_checkpoint_folder_refused_before_calibration(tmp_path):
    """(issue 28, defect 6: a read-only checkpoint folder was a traceback at the first save, after calibration)"""
    from evolq_pl.quant import is_calibrated
    m = module(float_file(tmp_path), passes=1, evaluate_at_end=False)
    with pytest.raises(ValueError, match=r"^SearchCheckpoint dirpath='/proc/evolq/ck': not a writable folder"):
        trainer(tmp_path, callbacks=[SearchCheckpoint(dirpath="/proc/evolq/ck")]).fit(m, datamodule=RandomImages())
    assert not is_calibrated(m.model)


def test_a_checkpoint_write_failing_mid_search_keeps_the_search_and_its_results(tmp_path):
    """(issue 28, defect 6: an OSError at a checkpoint write was a traceback and the search was lost)"""
    import errno

    from evolq_pl.report.results import IncompleteResultsError

    m = module(float_file(tmp_path), output_dir=str(tmp_path / "out"))
    t = trainer(tmp_path, callbacks=[SearchCheckpoint(dirpath=tmp_path / "ck")])
    real, writes = t.strategy.save_checkpoint, []

    def disk_full_after_the_first(checkpoint, filepath, **kw):
        writes.append(filepath)
        if len(writes) > 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(filepath))
        real(checkpoint, filepath, **kw)

    t.strategy.save_checkpoint = disk_full_after_the_first
    with pytest.warns(UserWarning, match="cannot write checkpoint .*last.ckpt: No space left on device; the search "
                                         "goes on") as warned, \
            pytest.raises(IncompleteResultsError, match=r"these parts failed: \{'checkpoint': 'cannot write checkpoint "):
        t.fit(m, datamodule=RandomImages())
    assert sum("cannot write checkpoint" in str(w.message) for w in warned) == 1  # once, not at every step
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["evaluations"] == 2 * 3 * len(m.search_run.units) and "top1_evolq" in results  # the whole search
    assert results["missing"] == {"checkpoint": f"cannot write checkpoint {writes[-1]}: No space left on device"}
    assert load(tmp_path / "ck" / "last.ckpt")["evolq"]["driver"]["position"] == 1  # the last good one stays
