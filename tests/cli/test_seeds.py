"""The seeds command aggregates per-seed results (two seeds on CPU, tiny model)."""
import json
import os
import subprocess
import sys

import pytest

from evolq_pl.cli.seeds import summarise
from tests.cli.test_trainer_cli import ROOT, tiny_config


def test_summarise_by_hand(tmp_path):
    # 4 test images; per seed (init, Evol-Q) top-1 and correctness (hex, first image in the highest bit):
    # seed 0 75 → 100 (image 3 only Evol-Q), seed 1 25 → 75 (images 1, 2 only Evol-Q): deltas +25, +50
    for seed, init, top1, ci, ce in ((0, 75.0, 100.0, "e", "f"), (1, 25.0, 75.0, "8", "e")):
        (tmp_path / f"seed{seed}").mkdir()
        (tmp_path / f"seed{seed}" / "results.json").write_text(json.dumps(
            {"model": "m", "w_bits": 4, "a_bits": 8, "top1_init": init, "top1_evolq": top1, "fitness_init": 2.0,
             "fitness_final": 2.0 - 0.001 * (seed + 1), "correct_init": ci, "correct_evolq": ce, "images_init": 4, "images_evolq": 4}))
    summary = summarise(tmp_path, [0, 1])
    rows = {r["metric"]: r for r in summary["rows"]}
    assert rows["top1_evolq"]["mean"] == 87.5 and rows["top1_evolq"]["std"] == pytest.approx(12.5 * 2**0.5)
    text = (tmp_path / "summary.md").read_text()
    assert "| top1_evolq | 87.50 ± 17.68 | 100.00 | 75.00 |" in text
    # (issue 27, 6: the fitness was shown as "25.74 ± 0.017" before and after the search) the digits that move,
    # and the gain itself: 0.001 and 0.002, mean 0.0015, sd 0.001/√2
    assert "| fitness_final | 1.998500 ± 0.000707 | 1.999000 | 1.998000 |" in text
    assert "| fitness_gain | 0.001500 ± 0.000707 | 0.001000 | 0.002000 |" in text
    # mean 37.5, sd 25/√2, half-width t(0.975, 1)·sd/√2 = 12.7062·12.5 = 158.83; 3 discordant images, all for
    # Evol-Q: exact McNemar p = 2·(1/2)³ = 0.25
    p = summary["paired"]
    assert p["mcnemar_p"] == pytest.approx(0.25) and (p["only_new"], p["only_base"]) == (3, 0)
    assert p["delta_ci95"] == pytest.approx([37.5 - 158.8275, 37.5 + 158.8275], abs=1e-3)
    assert "+37.50 [-121.33, +196.33], McNemar p = 0.25 (3 images only Evol-Q" in text
    assert "no claim (the interval holds 0)" in text


def test_seeds_command_two_seeds_cpu(tmp_path, fashion_mnist_available):
    if not fashion_mnist_available:
        pytest.skip("dataset-fashion-mnist not installed (.ci/run installs it)")
    config = tiny_config(tmp_path)
    out = subprocess.run([sys.executable, "cli.py", "seeds", "--config", str(config), "--seeds", "0", "1",
                          "--out", str(tmp_path / "seeds"), "--", "--trainer.callbacks", "[]",
                          "--trainer.enable_checkpointing", "false"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = [json.loads((tmp_path / "seeds" / f"seed{s}" / "results.json").read_text()) for s in (0, 1)]
    assert [r["seed"] for r in runs] == [0, 1]
    assert "top1_evolq" in (tmp_path / "seeds" / "summary.md").read_text()
    assert "paired over 2 seeds" in (tmp_path / "seeds" / "summary.md").read_text()
    assert all(len(r["correct_evolq"]) * 4 >= r["images_evolq"] > 0 for r in runs)
    assert list((tmp_path / "seeds" / "seed0" / "lightning_logs").iterdir())  # logs under --out
    assert not (tmp_path / "out").exists()  # not in the config's own output_dir

    def seeds(*args):
        return subprocess.run([sys.executable, "cli.py", "seeds", "--config", str(config), "--out",
                               str(tmp_path / "seeds"), *args], cwd=ROOT, capture_output=True, text=True, timeout=600)

    stamp = (tmp_path / "seeds" / "seed0" / "results.json").stat().st_mtime_ns
    again = seeds("--seeds", "0", "1", "--", "--trainer.callbacks", "[]", "--trainer.enable_checkpointing", "false")
    assert again.returncode == 0 and again.stderr.count("finished earlier with the same settings, skipped") == 2
    assert (tmp_path / "seeds" / "seed0" / "results.json").stat().st_mtime_ns == stamp

    other = seeds("--seeds", "0", "1", "--", "--model.init_args.quant.w_bits", "3")
    assert other.returncode == 2 and "holds a run of other settings" in other.stderr and "Traceback" not in other.stderr

    missing = seeds("--seeds", "0", "1", "2", "--summary-only")
    assert missing.returncode == 2 and "no results.json for seed(s) [2]" in missing.stderr

    printed = seeds("--seeds", "0", "1", "2", "--print-commands", "--", "--trainer.callbacks", "[]",
                    "--trainer.enable_checkpointing", "false")
    assert printed.returncode == 0 and len(printed.stdout.splitlines()) == 1  # seeds 0 and 1 are done
    assert "-m evolq_pl fit" in printed.stdout and f"--run_dir {tmp_path / 'seeds' / 'seed2'}" in printed.stdout
    (tmp_path / "seeds" / "seed2" / "checkpoints").mkdir(parents=True)
    (tmp_path / "seeds" / "seed2" / "checkpoints" / "last.ckpt").write_bytes(b"")  # an interrupted seed 2
    resumed = seeds("--seeds", "2", "--print-commands", "--", "--trainer.callbacks", "[]",
                    "--trainer.enable_checkpointing", "false")
    assert resumed.stdout.strip().endswith(f"--ckpt_path {tmp_path / 'seeds' / 'seed2' / 'checkpoints' / 'last.ckpt'}")


def test_summarise_refuses_runs_of_other_settings(tmp_path):
    for seed, bits in ((0, 4), (1, 3)):
        (tmp_path / f"seed{seed}").mkdir()
        settings = {"model": "m", "quant": {"w_bits": bits}, "search": {"passes": 10, "seed": seed}}
        (tmp_path / f"seed{seed}" / "results.json").write_text(json.dumps(
            {"model": "m", "w_bits": bits, "a_bits": 8, "top1_evolq": 80.0, "settings": settings}))
    with pytest.raises(ValueError, match="seed 1 ran with other settings than seed 0 .*W3A8 vs m W4A8"):
        summarise(tmp_path, [0, 1])


def test_plan_refuses_missing_configs_seed_owned_arguments_and_partial_results(tmp_path):
    from evolq_pl.cli.seeds import SeedsError, mark, plan
    config = tiny_config(tmp_path)
    with pytest.raises(SeedsError, match="--config='nope.yaml': no such file"):
        plan(["nope.yaml"], [0], tmp_path / "s", [])
    with pytest.raises(SeedsError, match="--model.init_args.search.seed is set per seed by the seeds command"):
        plan([str(config)], [0], tmp_path / "s", ["--model.init_args.search.seed=3"])
    mark([str(config)], 0, tmp_path / "s", [])
    (tmp_path / "s" / "seed0" / "results.json").write_text(json.dumps({"missing": {"init": "OSError: disk"}}))
    assert plan([str(config)], [0], tmp_path / "s", []) == [0]  # a partial result is rerun (it resumes)
    with pytest.raises(SeedsError, match=r"seed\(s\) \[0\] lack measurements"):
        summarise(tmp_path / "s", [0])


# A stand-in for a seed's ``fit`` (argv[1]: its seed folder): says when it is ready, then on SIGTERM/SIGINT
# notes the signal, takes a moment to stop (as a fit finishing its step does) and exits 128 + signal.
FAKE_FIT = """
import os, pathlib, signal, sys, time
folder = pathlib.Path(sys.argv[1])
def stop(signum, frame):
    (folder / "got").write_text(str(signum))
    time.sleep(0.5)
    (folder / "exited").write_text("yes")
    sys.exit(128 + signum)
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
(folder / "ready").write_text(str(os.getpid()))
time.sleep(60)
"""
# ``evolq-pl seeds`` with each seed's fit replaced by the command in argv[1] (``{folder}``: the seed folder)
SEEDS_WITH_FAKE_FIT = """
import sys
from evolq_pl.cli import main, seeds
child = sys.argv[1]
seeds.seed_command = lambda configs, seed, out, extra: [sys.executable, "-c", child, str(seeds.seed_dir(out, seed))]
main(["seeds", *sys.argv[2:]])
"""


def wait_for(path, timeout=30.0):
    import time
    end = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < end, f"{path} did not appear"
        time.sleep(0.05)
    return path


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_signal_is_passed_on_to_the_running_fit_and_waited_for(tmp_path, sig):
    import signal
    signum, out = getattr(signal, sig), tmp_path / "seeds"
    argv = [sys.executable, "-c", SEEDS_WITH_FAKE_FIT, FAKE_FIT, "--config", str(tiny_config(tmp_path)), "--seeds",
            "0", "1", "--out", str(out)]
    seeds = subprocess.Popen(argv, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        fit_pid = wait_for(out / "seed0" / "ready").read_text()
        # the folder is locked while its fit runs: a second seeds command is refused, naming the folder and pid
        second = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=20)
        seeds.send_signal(signum)
        _, err = seeds.communicate(timeout=60)
    finally:
        seeds.kill()
    assert second.returncode == 2 and second.stderr.startswith(
        f"error: {out / 'seed0'} is in use by process {fit_pid} (a fit of another seeds command)"), second.stderr
    assert seeds.returncode == 128 + signum, err
    assert (out / "seed0" / "got").read_text() == str(signum) and (out / "seed0" / "exited").exists()  # waited
    assert not (out / "seed1" / "ready").exists()  # no further seed started
    assert err.splitlines() == [f"error: seeds stopped by {sig} (passed on to the fit of seed(s) [0], which have "
                                "exited); rerun the same command to resume"]


def test_the_fit_keeps_its_folder_locked_and_a_dead_holder_does_not_block(tmp_path):
    from evolq_pl.cli.seeds import SeedsError, seed_lock, start_seed
    config, out = str(tiny_config(tmp_path)), tmp_path / "seeds"
    folder = out / "seed0"
    with seed_lock(folder) as lock:
        with pytest.raises(SeedsError, match=f"{folder} is in use by process {os.getpid()} "):
            with seed_lock(folder):
                pass
        import evolq_pl.cli.seeds as seeds
        original, seeds.seed_command = seeds.seed_command, lambda *a: [sys.executable, "-c", FAKE_FIT, str(folder)]
        try:
            fit = start_seed([config], 0, out, [], None, lock)
        finally:
            seeds.seed_command = original
    try:  # seeds let go (as when it is killed): the fit still holds the folder
        wait_for(folder / "ready")
        with pytest.raises(SeedsError, match=f"in use by process {fit.pid} "):
            with seed_lock(folder):
                pass
    finally:
        fit.kill()
        fit.wait()
    assert (folder / ".lock").read_text().strip() == str(fit.pid)  # left behind by a dead process: no obstacle
    with seed_lock(folder):
        pass


def fake_exits(monkeypatch, codes):
    import evolq_pl.cli.seeds as seeds
    monkeypatch.setattr(seeds, "seed_command",
                        lambda configs, seed, out, extra: [sys.executable, "-c", f"raise SystemExit({codes[seed]})"])


def test_the_resume_hint_only_where_a_rerun_can_resume(tmp_path, monkeypatch):
    from evolq_pl.cli.seeds import SeedsError, run_seeds
    config = str(tiny_config(tmp_path))
    fake_exits(monkeypatch, {0: 2, 1: 1})
    with pytest.raises(SeedsError) as info:
        run_seeds([config], [0, 1], tmp_path / "a", [], [])
    assert str(info.value) == ("seed 1 (exit 1) did not finish; rerun the same command to resume them; seed 0 "
                               "(exit 2) stopped on an error (its one line is above): the same command would fail "
                               "the same way; fix what it names, then rerun")
    fake_exits(monkeypatch, {0: 2})
    with pytest.raises(SeedsError) as info:
        run_seeds([config], [0], tmp_path / "b", [], [])
    assert "resume" not in str(info.value)
    # a one-line error after the search started (a failed checkpoint write, a measurement listed as missing):
    # its folder holds a checkpoint, so a rerun resumes it
    (tmp_path / "c" / "seed0" / "checkpoints").mkdir(parents=True)
    (tmp_path / "c" / "seed0" / "checkpoints" / "last.ckpt").write_bytes(b"")
    with pytest.raises(SeedsError, match=r"^seed 0 \(exit 2\) did not finish; rerun the same command to resume"):
        run_seeds([config], [0], tmp_path / "c", [], [])


@pytest.mark.parametrize("summary_only", [True, False])
@pytest.mark.parametrize("damage, what", [("{\"top1", "not JSON: "), ("[1, 2]", "a JSON list, not an object")])
def test_a_damaged_results_file_is_named_in_one_line(tmp_path, summary_only, damage, what):
    from evolq_pl.cli.seeds import mark
    config, out = tiny_config(tmp_path), tmp_path / "seeds"
    mark([str(config.resolve())], 0, out, [])
    (out / "seed0" / "results.json").write_text(damage)
    run = subprocess.run([sys.executable, "-m", "evolq_pl", "seeds", "--config", str(config), "--seeds", "0",
                          "--out", str(out), *(["--summary-only"] if summary_only else [])],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.splitlines()[0].startswith(f"error: {out / 'seed0' / 'results.json'} is damaged ({what}")
    assert not (out / "seed0" / "lightning_logs").exists()  # no fit started
