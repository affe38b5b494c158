"""The seeds command runs a config per seed (two seeds on CPU, tiny model), resumes, refuses other settings and
stops cleanly; the summary itself is tested in tests/report/test_seeds.py."""
import json
import os
import subprocess
import sys

import pytest

from evolq_pl.cli.seeds import SeedsError, mark, plan
from evolq_pl.report.seeds import legacy_fingerprint
from tests.cli.test_trainer_cli import ROOT, tiny_config


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
    assert other.returncode == 2 and "Traceback" not in other.stderr
    assert other.stderr.startswith(f"error: --out={str(tmp_path / 'seeds')!r}: {tmp_path / 'seeds' / 'seed0'} holds a "
                                   "run of other settings (model.init_args.quant.w_bits=4 there, 3 now; "
                                   "trainer.callbacks=[] there, unset now; "), other.stderr

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


def test_plan_refuses_missing_configs_seed_owned_arguments_and_reruns_partial_results(tmp_path):
    config = tiny_config(tmp_path)
    with pytest.raises(SeedsError, match="--config='nope.yaml': no such file"):
        plan(["nope.yaml"], [0], tmp_path / "s", [])
    with pytest.raises(SeedsError, match="--model.init_args.search.seed is set per seed by the seeds command"):
        plan([str(config)], [0], tmp_path / "s", ["--model.init_args.search.seed=3"])
    mark([str(config)], 0, tmp_path / "s", [])
    (tmp_path / "s" / "seed0" / "results.json").write_text(json.dumps({"missing": {"init": "OSError: disk"}}))
    assert plan([str(config)], [0], tmp_path / "s", []) == [0]  # a partial result is rerun (it resumes)


def test_plan_compares_parsed_settings_not_argument_strings(tmp_path):
    # issue 27: the same overrides in another order or in --k=v form, or a config file rewritten with the same
    # values, are the same settings; a different value (given or in the config file) is refused, naming the key
    config, out = str(tiny_config(tmp_path)), tmp_path / "s"
    mark([config], 0, out, ["--model.init_args.quant.w_bits", "3", "--trainer.max_steps", "5"])
    (out / "seed0" / "results.json").write_text(json.dumps({"top1_evolq": 80.0}))  # finished: skipped
    same = ["--trainer.max_steps=5", "--model.init_args.quant.w_bits=3", "--model.init_args.search.passes", "1"]
    assert plan([config], [0, 1], out, same) == [1]
    with pytest.raises(SeedsError, match=r"seed0 holds a run of other settings \(model\.init_args\.quant\.w_bits=3 "
                                         r"there, 4 now\); use another --out or delete that folder$"):
        plan([config], [0], out, ["--trainer.max_steps=5", "--model.init_args.quant.w_bits=4"])
    import yaml
    values = yaml.safe_load(open(config))
    open(config, "w").write(yaml.safe_dump(values, sort_keys=False, default_flow_style=True))  # other bytes
    assert plan([config], [0], out, same) == []
    values["data"]["init_args"]["calib_size"] = 200
    open(config, "w").write(yaml.safe_dump(values))
    with pytest.raises(SeedsError, match=r"\(data\.init_args\.calib_size=100 there, 200 now\)"):
        plan([config], [0], out, same)


def test_a_seed_folder_recorded_by_argument_strings_still_resumes_under_the_same_command(tmp_path):
    # run.json written before settings were compared by value holds the fingerprint of the arguments as given
    config, out, extra = str(tiny_config(tmp_path)), tmp_path / "s", ["--trainer.max_steps", "5"]
    (out / "seed0").mkdir(parents=True)
    (out / "seed0" / "run.json").write_text(json.dumps(
        {"fingerprint": legacy_fingerprint([config], extra), "configs": [config], "extra": extra, "seed": 0}))
    assert plan([config], [0], out, extra) == [0]
    with pytest.raises(SeedsError, match=r"holds a run of other settings \(configs .* with arguments "
                                         r"\['--trainer.max_steps', '5'\] there, .* with \['--trainer.max_steps=5'\] now"):
        plan([config], [0], out, ["--trainer.max_steps=5"])


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


def wait_for(path, timeout=120.0):  # seeds parses fit's settings (imports Lightning) first
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
        second = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
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
    from evolq_pl.cli.seeds import seed_lock, start_seed
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
    from evolq_pl.cli.seeds import run_seeds
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
    config, out = tiny_config(tmp_path), tmp_path / "seeds"
    mark([str(config.resolve())], 0, out, [])
    (out / "seed0" / "results.json").write_text(damage)
    run = subprocess.run([sys.executable, "-m", "evolq_pl", "seeds", "--config", str(config), "--seeds", "0",
                          "--out", str(out), *(["--summary-only"] if summary_only else [])],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.splitlines()[0].startswith(f"error: {out / 'seed0' / 'results.json'} is damaged ({what}")
    assert not (out / "seed0" / "lightning_logs").exists()  # no fit started
