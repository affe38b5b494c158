"""EvolQModule through Trainer.fit: resume equals uninterrupted (bitwise), results, checkpoint checks."""
import json

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from evolq_pl.errors import EvolQError
from evolq_pl.lightning import EvolQModule
from evolq_pl.lightning.base_data import EvolQDataModule
from evolq_pl.search.calibration import CalibrationData
from evolq_pl.search.state import CheckpointMismatchError
from evolq_pl.models.random_weights import randomize_
from evolq_pl.quant import QuantConfig, calibrate
from evolq_pl.search import FitnessEvaluator, SearchConfig
from torch.utils.data import DataLoader, TensorDataset

KW = dict(img_size=28, patch_size=7, in_chans=1, num_classes=10, embed_dim=32, depth=3, num_heads=2)


class RandomImages(EvolQDataModule):
    """Seeded random images with labels: calibration 64 (+16 held out), evaluation 64."""

    def __init__(self, holdout: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(144, 1, 28, 28, generator=g), torch.randint(0, 10, (144,), generator=g)
        self.holdout_size = holdout

    def calibration_data(self) -> CalibrationData:
        h = self.holdout_size
        return CalibrationData(self.x[:64], self.y[:64], 32, self.x[64:64 + h] if h else None,
                               self.y[64:64 + h] if h else None)

    def eval_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.x[80:], self.y[80:]), batch_size=32)


def make_module(passes: int = 2, seed: int = 0, **kw) -> EvolQModule:
    m = EvolQModule("deit_tiny_patch16_224", KW, quant=QuantConfig(w_bits=3),
                    search=SearchConfig(passes=passes, seed=seed), **kw)
    randomize_(m.model, 0)
    return m


def trainer(tmp_path, **kw) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_progress_bar=False,
                     default_root_dir=tmp_path, num_sanity_val_steps=0, **kw)


def scales(m: EvolQModule) -> list[torch.Tensor]:
    return [u.get() for u in m.search_run.units]


def test_fit_writes_results_and_never_worsens(tmp_path, capsys):
    m = make_module(output_dir=str(tmp_path), note="what this run shows")
    data = RandomImages()
    trainer(tmp_path, enable_checkpointing=False).fit(m, datamodule=data)
    r = json.loads((tmp_path / "results.json").read_text())
    assert r["note"] == "what this run shows" and capsys.readouterr().out.splitlines()[0] == "what this run shows"
    assert r["eval_split"] == "test" and r["images_evolq"] == 64 and len(r["correct_evolq"]) == 16
    for key in ("model", "w_bits", "a_bits", "seed", "calib_size", "fitness_init", "fitness_final", "top1_float",
                "top1_init", "top1_evolq", "top5_float", "top5_init", "top5_evolq", "evaluations", "search_seconds"):
        assert key in r
    assert r["fitness_final"] <= r["fitness_init"] and r["calib_size"] == 64
    assert r["evaluations"] == 2 * 3 * 3  # passes × units × cycles
    assert len(json.loads((tmp_path / "history.json").read_text())) == 6


def test_include_embed_searches_the_patch_embedding(tmp_path):
    m = EvolQModule("deit_tiny_patch16_224", KW, quant=QuantConfig(w_bits=3), output_dir=str(tmp_path),
                    search=SearchConfig(passes=1, seed=0, include_embed=True))
    randomize_(m.model, 0)
    assert [u.name for u in m.search_run.units] == ["patch_embed", "blocks.0.attn", "blocks.1.attn", "blocks.2.attn"]
    trainer(tmp_path, enable_checkpointing=False).fit(m, datamodule=RandomImages())
    r = json.loads((tmp_path / "results.json").read_text())
    assert r["evaluations"] == 1 * 4 * 3 and r["fitness_final"] <= r["fitness_init"]
    # the reported fitness is the final model's, recomputed here without any cache
    fresh = FitnessEvaluator(m.model, RandomImages().calibration_data().batches(), use_cache=False)()
    assert fresh == pytest.approx(r["fitness_final"], rel=1e-5)


def test_kill_and_resume_equals_uninterrupted(tmp_path):
    full = make_module()
    trainer(tmp_path / "a", enable_checkpointing=False).fit(full, datamodule=RandomImages())

    ckpt = ModelCheckpoint(dirpath=tmp_path / "ck", every_n_train_steps=1, save_last=True)
    killed = make_module(evaluate_at_end=False)
    trainer(tmp_path / "b", max_steps=4, callbacks=[ckpt]).fit(killed, datamodule=RandomImages())
    assert killed.search_run.driver.position == 4

    resumed = make_module()
    resumed.model.load_state_dict(make_module().model.state_dict())  # fresh, uncalibrated model
    trainer(tmp_path / "c", enable_checkpointing=False).fit(resumed, datamodule=RandomImages(),
                                                          ckpt_path=str(tmp_path / "ck" / "last.ckpt"))
    assert resumed.search_run.driver.position == full.search_run.driver.position == 6
    assert all(torch.equal(a, b) for a, b in zip(scales(full), scales(resumed)))
    assert resumed.search_run.driver.fitness == full.search_run.driver.fitness


def test_checkpoint_from_other_config_refused(tmp_path):
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True)
    m = make_module(passes=1, evaluate_at_end=False)
    trainer(tmp_path, callbacks=[ckpt]).fit(m, datamodule=RandomImages())
    other = EvolQModule("deit_tiny_patch16_224", KW, quant=QuantConfig(w_bits=4), search=SearchConfig(passes=1))
    with pytest.raises(CheckpointMismatchError, match="w_bits.*checkpoint=3, config=4"):
        trainer(tmp_path).validate(other, datamodule=RandomImages(), ckpt_path=str(tmp_path / "ck" / "last.ckpt"))


def test_holdout_and_test_oracle_selection_keep_their_best_state(tmp_path):
    data = RandomImages(holdout=16)
    m = make_module(passes=1, selection="holdout", output_dir=str(tmp_path))
    trainer(tmp_path, enable_checkpointing=False).fit(m, datamodule=data)
    holdout = data.calibration_data().holdout_batches()
    kept = FitnessEvaluator(m.model, holdout, use_cache=False)()  # the model left behind, measured afresh
    assert kept == pytest.approx(m.search_run.selector.best_score, rel=1e-6)
    with pytest.warns(UserWarning, match="test_oracle"):
        o = make_module(passes=1, selection="test_oracle", output_dir=str(tmp_path))
    trainer(tmp_path, enable_checkpointing=False).fit(o, datamodule=RandomImages())
    r = json.loads((tmp_path / "results.json").read_text())
    assert r["top1_evolq"] == pytest.approx(o.search_run.selector.best_score)  # the reported state is the oracle's pick
    with pytest.raises(ValueError, match="selection='best'"):
        make_module(selection="best")


def test_nonfinite_values_name_the_first_module(tmp_path):
    m = make_module(passes=1)
    with torch.no_grad():
        m.model.blocks[1].attn.qkv.weight[0, :] = 3e38  # finite, but overflows in the float forward
    with pytest.raises(ValueError, match=r"calibration batch 0: non-finite .* at blocks\.1\.attn\.qact1 "):
        trainer(tmp_path).fit(m, datamodule=RandomImages())

    m = make_module(passes=1)  # calibrated fine; the quantized forward overflows
    data = RandomImages()
    calibrate(m.model, data.calibration_data().batches())
    with torch.no_grad():
        m.model.blocks[1].attn.qact1.scale.fill_(float("nan"))  # e.g. a corrupted checkpoint
    with pytest.raises(ValueError, match=r"fitness nan is not finite; the first non-finite output comes from "
                                         r"blocks\.1\.attn\.qact1 "):
        trainer(tmp_path).fit(m, datamodule=data)


def test_results_json_is_strict_and_survives_a_failed_evaluation(tmp_path):
    from evolq_pl.cli import user_error
    from evolq_pl.report.results import IncompleteResultsError, strict_json

    assert strict_json({"a": float("nan"), "b": [float("inf"), 1.0]}) == '{"a": null, "b": [null, 1.0]}'

    class BrokenEval(RandomImages):
        calls = 0

        def eval_dataloader(self):
            BrokenEval.calls += 1
            if BrokenEval.calls > 1:  # the float and init evaluations fail after the search finished
                raise OSError("disk vanished")
            return super().eval_dataloader()

    m = make_module(passes=1, output_dir=str(tmp_path / "out"))
    with pytest.raises(IncompleteResultsError, match="but these parts failed") as raised:
        trainer(tmp_path).fit(m, datamodule=BrokenEval())
    assert user_error(raised.value) is raised.value  # the command line prints it in one line (issue 28, defect 6)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["evaluations"] == 3 * len(m.search_run.units) and "top1_evolq" in results
    assert set(results["missing"]) == {"float", "init"} and "disk vanished" in results["missing"]["float"]


def test_a_datamodule_that_is_not_an_evolq_one_is_refused_naming_it(tmp_path):
    class Plain(L.LightningDataModule):
        def train_dataloader(self):
            return DataLoader(TensorDataset(torch.zeros(2, 1)), batch_size=1)

    with pytest.raises(EvolQError, match="data: Plain is not an EvolQDataModule .* accepted: FashionMNISTDataModule"):
        trainer(tmp_path, enable_checkpointing=False).fit(make_module(output_dir=str(tmp_path)), datamodule=Plain())


def test_a_restored_module_is_never_recalibrated():
    m = make_module(passes=1)
    m.search_run.init_scales = {}  # as after restoring a checkpoint, whose model here lacks its calibration
    with pytest.raises(EvolQError, match="refusing to recalibrate over its searched scales"):
        m.search_run.ensure_calibrated(RandomImages().calibration_data(), torch.device("cpu"))


def test_an_unwritable_logger_folder_is_named_before_lightning_creates_it(tmp_path):
    """(issue 28, defect 6: a read-only default_root_dir, the config's logger folder, was a traceback from inside
    Lightning)"""
    from lightning.pytorch.loggers import CSVLogger
    t = L.Trainer(accelerator="cpu", devices=1, max_epochs=1, enable_progress_bar=False, enable_checkpointing=False,
                  logger=CSVLogger(save_dir="/proc/evolq"))
    with pytest.raises(ValueError, match=r"^trainer.logger \(CSVLogger\) save_dir='/proc/evolq': not a writable folder"):
        t.fit(make_module(passes=1, output_dir=str(tmp_path)), datamodule=RandomImages())
