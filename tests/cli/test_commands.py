"""The command line as a user meets it: --help, the console script, one-line errors, refused checkpoints."""
import os
import pickle
import signal
import subprocess
import sys
import time

import pytest
import torch

from evolq_pl.cli import COMMANDS, main
from tests.cli.test_trainer_cli import ROOT, cli, tiny_config


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


def test_help_lists_every_command(capsys):
    code, out, _ = run_main(capsys, "--help")
    assert code == 0
    for name in ("fit", "validate", "export", "landscape", "seeds"):
        assert f"  {name}" in out and COMMANDS[name].summary in out
    code, _, err = run_main(capsys, "trian")
    assert code == 2 and err.startswith("error: unknown command 'trian'; accepted: fit, validate, export")


def test_version(capsys):
    from importlib.metadata import version
    code, out, _ = run_main(capsys, "--version")
    assert code == 0 and out == f"evolq-pl {version('evolq_pl')}\n"


def test_console_script_and_module_entry_points():
    for cmd in (["evolq-pl", "--help"], [sys.executable, "-m", "evolq_pl", "--help"]):
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd="/")
        assert out.returncode == 0 and "landscape" in out.stdout and "seeds" in out.stdout, (cmd, out.stderr)


@pytest.mark.parametrize("args, message", [
    (["--model.init_args.quant.w_bits", "1"], "quant.w_bits=1: not supported; accepted: integers 2..8"),
    (["--model.init_args.quant.w_bits", "9"], "quant.w_bits=9: not supported; accepted: integers 2..8"),
    (["--model.init_args.quant.a_bits", "0"], "quant.a_bits=0: not supported; accepted: integers 2..8"),
    (["--model.init_args.search.population", "0"], "search.population=0: must be ≥ 1"),
    (["--model.init_args.search.passes", "-1"], "search.passes=-1: must be ≥ 0"),
    (["--model.init_args.search.loss", "l1"], "search.loss='l1': unknown; accepted: cosine, infonce, kl, mse"),
    (["--model.init_args.model_name", "resnet50"], "unknown model 'resnet50'; supported: vit_base_patch16_224"),
    (["--model.init_args.selection", "holdout"],
     "selection='holdout' needs a held-out split: set data.init_args.holdout_size > 0"),
    (["--model.init_args.output_dir", "/proc/evolq"], "model.init_args.output_dir='/proc/evolq': not a writable folder"),
    (["--run_dir", "/proc/evolq"], "--run_dir='/proc/evolq': not a writable folder"),
])
def test_bad_value_gives_one_line(tmp_path, args, message):
    out = cli("fit", "--config", str(tiny_config(tmp_path)), *args)
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert len(errors) == 1 and message in errors[0], out.stderr[-2000:]
    assert out.stderr.splitlines()[-2:] == [errors[0], "(full traceback: EVOLQ_TRACEBACK=1)"]
    assert not (tmp_path / "out" / "results.json").exists()


@pytest.mark.parametrize("args, line", [
    (["--model.init_args.serch.passes", "2"],
     "model.init_args.serch.passes: not an option of EvolQModule; did you mean model.init_args.search.passes?"),
    (["--model.init_args.search", "{pases: 2}"],
     "model.init_args.search.pases: not an option of SearchConfig; did you mean model.init_args.search.passes?"),
    (["--data.init_args.calib_siz", "3"],
     "data.init_args.calib_siz: not an option of FashionMNISTDataModule; did you mean data.init_args.calib_size?"),
    (["--model.init_args.search.passes", "abc"], "model.init_args.search.passes='abc': expected int"),
    (["--trainer.max_epochs", "x"], "trainer.max_epochs='x': expected int"),
    (["--trainer.max_epoch", "2"], "unrecognized arguments: --trainer.max_epoch 2"),  # not expanded silently
    (["--config", "fmnist/dei"], "--config='fmnist/dei' is neither a file nor a shipped config; did you mean "
                                 "fmnist/deit, fmnist/levit? list them with: evolq-pl configs"),
])
def test_parse_error_is_one_line(capsys, args, line):
    """(issue 27, 3: a typo printed ~60 lines of usage and nested Union alternatives)"""
    code, out, err = run_main(capsys, "fit", "--config", "fmnist/deit", *args)
    assert (code, out, err.splitlines()) == (2, "", [f"error: {line}"])
    if args[0] != "--config":  # export and landscape build the module through the same parser: the same line
        code, out, err = run_main(capsys, "export", "--config", "fmnist/deit", "--format", "onnx", "--output",
                                  "/nonexistent/m.onnx", *args)
        assert (code, err.splitlines()[-1:]) == (2, [f"error: {line}"]), err


def test_missing_image_folder_gives_one_line():
    out = cli("fit", "--config", "configs/imagenet/base.yaml", "--config", "configs/imagenet/deit_tiny_w4a8.yaml",
              "--model.init_args.pretrained", "false", "--data.init_args.root", "/nonexistent")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.splitlines()[-2] == "error: data.root='/nonexistent' does not exist"


def test_traceback_on_request(tmp_path):
    env = {**os.environ, "EVOLQ_TRACEBACK": "1"}
    args = [sys.executable, "cli.py", "fit", "--config", str(tiny_config(tmp_path)), "--model.init_args.search.loss", "l1"]
    for argv, environ in ((args, env), (args + ["--traceback"], None)):
        out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300, env=environ)
        assert out.returncode != 0 and "Traceback (most recent call last)" in out.stderr


def test_a_bug_met_while_handling_a_user_error_keeps_its_traceback():
    from evolq_pl.cli import user_error
    from evolq_pl.quant import QuantConfig
    try:
        try:
            QuantConfig(w_bits=1)
        except ValueError:
            {}["bug"]  # noqa: B018  (a genuine bug inside a handler)
    except KeyError as err:
        assert user_error(err) is None  # shown with its full traceback, not as the user's error
    try:
        try:
            QuantConfig(w_bits=1)
        except ValueError as cause:
            raise RuntimeError("wrapped by a library") from cause
    except RuntimeError as err:
        assert str(user_error(err)) == "quant.w_bits=1: not supported; accepted: integers 2..8"


def test_a_value_error_from_elsewhere_keeps_its_traceback():
    """Only the project's checks (EvolQError) and file errors naming their file are one line: a ValueError from a
    library is a bug to report, whatever frame raised it."""
    from evolq_pl.cli import user_error
    from evolq_pl.errors import EvolQError
    from evolq_pl.search import SearchConfig
    assert user_error(ValueError("math domain error")) is None
    with pytest.raises(EvolQError) as raised:
        SearchConfig(passes=-1)
    assert user_error(raised.value) is raised.value and str(raised.value) == "search.passes=-1: must be ≥ 0"
    missing = FileNotFoundError(2, "No such file or directory", "/no/such/file")
    assert user_error(missing) is missing and user_error(OSError("no file named")) is None


def test_a_write_error_names_the_file_not_its_temporary_name(tmp_path):
    """(review: the OSError a WriteError is raised from names the hidden temporary file; the check of ours wins)"""
    from evolq_pl.cli import user_error
    from evolq_pl.io import write_text_atomic
    with pytest.raises(OSError) as raised:
        write_text_atomic(tmp_path / "missing" / "results.json", "x")
    assert str(user_error(raised.value)) == \
        f"cannot write {tmp_path}/missing/results.json: No such file or directory (errno 2, ENOENT)"


class Payload:
    """Unpickling this runs code: it creates the file named ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_payload_refused_by_every_command(tmp_path):
    marker = tmp_path / "payload_ran"
    ckpt = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "evolq": Payload(marker)}, ckpt, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    config = str(tiny_config(tmp_path))
    commands = {
        "fit": ["fit", "--config", config, "--ckpt_path", str(ckpt)],
        "validate": ["validate", "--config", config, "--ckpt_path", str(ckpt)],
        "export": ["export", "--config", config, "--ckpt_path", str(ckpt), "--format", "safetensors",
                   "--output", str(tmp_path / "m.safetensors")],
        "landscape": ["landscape", "--config", config, "--ckpt_path", str(ckpt), "--unit", "0",
                      "--out", str(tmp_path / "land")],
    }
    for name, argv in commands.items():
        out = cli(*argv)
        assert out.returncode == 2, (name, out.stderr[-2000:])
        assert "not a weights-only checkpoint, refused" in out.stderr, (name, out.stderr[-2000:])
        assert not marker.exists(), f"{name} ran the pickle payload"
    assert not (tmp_path / "m.safetensors").exists()


def test_pickle_payload_behind_the_last_alias_is_one_line(tmp_path, capsys):
    """(issue 28, 6: ``--ckpt_path last`` skipped the project's pre-check; Lightning refused the payload with
    its own traceback)"""
    marker = tmp_path / "payload_ran"
    (tmp_path / "ckpt").mkdir()
    torch.save({"state_dict": {}, "evolq": Payload(marker)}, tmp_path / "ckpt" / "last.ckpt",
               pickle_protocol=pickle.HIGHEST_PROTOCOL)
    code, _, err = run_main(capsys, "validate", "--config", str(tiny_config(tmp_path)), "--ckpt_path", "last")
    assert code == 2 and not marker.exists()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == ["error: --ckpt_path='last': not a weights-only checkpoint, refused (Weights only load failed)"]


def test_export_output_checked_before_work(tmp_path, capsys):
    config = str(tiny_config(tmp_path))
    (tmp_path / "folder").mkdir()
    code, _, err = run_main(capsys, "export", "--config", config, "--format", "safetensors",
                            "--output", str(tmp_path / "folder"))
    assert code == 2 and f"--output='{tmp_path / 'folder'}' is a folder" in err
    code, _, err = run_main(capsys, "export", "--config", config, "--format", "onnx", "--output", "/proc/x.onnx")
    assert code == 2 and "--output='/proc/x.onnx': /proc is not writable" in err
    (tmp_path / "file").write_text("")
    code, _, err = run_main(capsys, "export", "--config", config, "--format", "onnx",
                            "--output", str(tmp_path / "file" / "x.onnx"))
    assert code == 2 and f"{tmp_path / 'file'} is a file, not a folder" in err


def test_sigterm_during_fit_exits_non_zero(tmp_path, fashion_mnist_available):
    if not fashion_mnist_available:
        pytest.skip("dataset-fashion-mnist not installed (.ci/run installs it)")
    proc = subprocess.Popen([sys.executable, "cli.py", "fit", "--config", str(tiny_config(tmp_path)),
                             "--model.init_args.search.passes", "100000"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    for line in proc.stdout:  # wait until the search runs
        if "calibrated init" in line or time.monotonic() > deadline:
            break
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + 15 and "stopped by SIGTERM before it finished" in out
    assert not (tmp_path / "out" / "results.json").exists()


def test_extra_commands_take_fits_options_directly(capsys):
    """(issue 27, 4: export/landscape/seeds needed ``--`` before --model.*; flags had two spellings)"""
    from evolq_pl.cli.argv import UsageError, command_parser
    parser, own, passed = command_parser("export", None, ["--config", "c.yaml", "--model.init_args.quant.w_bits",
                                                          "3", "--overwrite", "--", "--data.init_args.seed=2"])
    parser.add_flag("--overwrite", help="")
    parser.add_flag("--summary_only", "--summary-only", help="")
    args, passed = parser.parse_command(own, passed)
    assert (args.config, args.overwrite, args.summary_only) == (["c.yaml"], True, False)
    assert passed == ["--model.init_args.quant.w_bits", "3", "--data.init_args.seed=2"]
    args, _ = parser.parse_command(["--config", "c", "--overwrite", "false", "--summary-only", "true"], [])
    assert (args.overwrite, args.summary_only) == (False, True)
    args, passed = parser.parse_command(["--config", "c", "--trainer.max_steps", "-1"], [])
    assert passed == ["--trainer.max_steps", "-1"]  # a negative value is a value, not an option
    with pytest.raises(UsageError, match=r"^evolq-pl export: unrecognized arguments: --ovewrite \(accepted: "
                                         r"--config, --overwrite, --summary_only, and fit's"):
        parser.parse_command(["--config", "c", "--ovewrite"], [])
    with pytest.raises(UsageError, match=r"^evolq-pl export: the following arguments are required: --config$"):
        parser.parse_command([], [])
    code, _, err = run_main(capsys, "seeds", "--config", "demo", "--out", "x", "--seeds", "zero")
    assert code == 2 and err.splitlines() == ["error: evolq-pl seeds: argument --seeds: invalid int value: 'zero'"]


def test_fit_help_shows_what_a_search_uses(capsys):
    """(issue 27, 4: ``fit --help`` listed optimizer and scheduler options a search never uses)"""
    code, out, _ = run_main(capsys, "fit", "--help")
    assert code == 0 and "--model.help" in out and "--run_dir" in out
    assert "--optimizer" not in out and "--lr_scheduler" not in out
    code, out, _ = run_main(capsys, "fit", "--config", "demo", "--model.help", "EvolQModule")
    assert code == 0 and "--model.search.help" in out and "--model.checkpoint_weights" in out


@pytest.mark.parametrize("value, backend", [("null", None), ("inductor", "inductor")])
def test_compile_backend_from_the_command_line(capsys, value, backend):
    """(issue 27, 4: ``search.compile_backend null`` on the command line was refused as the string 'None') The
    printed config (what a run saves) reads back as the backend asked for (null: eager)."""
    import yaml

    from evolq_pl.search import SearchConfig

    code, out, err = run_main(capsys, "fit", "--config", "demo", "--model.init_args.search.compile_backend", value,
                              "--print_config")
    assert code == 0, err
    printed = yaml.safe_load(out)["model"]["init_args"]["search"]["compile_backend"]
    assert SearchConfig(compile_backend=printed).compile_backend == backend
