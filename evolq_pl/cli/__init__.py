"""The command line: ``evolq-pl <command>`` = ``python cli.py <command>`` = ``python -m evolq_pl <command>``.

Commands are registered here with a one-line description (``--help`` lists them). A bad value ends in one
line, ``error: <field>=<value>: <what is accepted>``, and exit status 2; ``EVOLQ_TRACEBACK=1`` (or
``--traceback`` anywhere on the line) shows the full traceback for a bug report.
"""
from __future__ import annotations

import importlib
import os
import pickle
import sys
from dataclasses import dataclass

from evolq_pl.cli.argv import UsageError
from evolq_pl.cli.configs import resolve_config_args
from evolq_pl.errors import EvolQError

SIGTERM_EXIT = 128 + 15


@dataclass(frozen=True)
class Command:
    module: str  # a module with main(argv); "" = a LightningCLI subcommand
    summary: str


COMMANDS: dict[str, Command] = {
    "fit": Command("", "calibrate (FQ-ViT) and run the Evol-Q search; writes results.json and checkpoints"),
    "validate": Command("", "top-1/top-5 of a config's model, or of a searched checkpoint (--ckpt_path)"),
    "export": Command("evolq_pl.cli.export", "write a calibrated or searched model as safetensors or ONNX (QDQ)"),
    "landscape": Command("evolq_pl.cli.landscape", "sweep one unit's scales and plot fitness / top-1"),
    "seeds": Command("evolq_pl.cli.seeds", "run one config for several seeds (resumable) and summarise them"),
    "configs": Command("evolq_pl.cli.configs", "list the shipped configs (--config takes their names), or print one"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: evolq-pl <command> [--config FILE ...] [options]   (or: python cli.py <command> …)", "",
             "Evol-Q post-training quantization of vision transformers.", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {c.summary}" for name, c in COMMANDS.items()]
    lines += ["", "evolq-pl <command> --help shows a command's options; evolq-pl --version the version.",
              "EVOLQ_TRACEBACK=1 (or --traceback) shows full tracebacks instead of one-line errors."]
    return "\n".join(lines)


def user_error(err: BaseException) -> BaseException | None:
    """The exception a user can act on: the deepest in the cause chain that is an ``EvolQError`` (every check of
    the project raises one), Lightning's MisconfigurationException, or an OSError naming its file; None for
    anything else (a bug: full traceback)."""
    chain, seen = [], set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        chain.append(e)
        e = e.__cause__  # raised *from*: the wrapper's cause; an error met while handling another is not one
    ours = [e for e in chain if isinstance(e, EvolQError) or type(e).__name__ == "MisconfigurationException"]
    # an OSError naming its file only where no check of ours told it better (a WriteError's cause names the
    # temporary file it was writing)
    files = [e for e in chain if isinstance(e, OSError) and e.filename is not None]
    return (ours or files or [None])[-1]


def one_line(err: BaseException) -> str:
    """The error's own sentence; from a DataLoader worker, the original error's line, not the worker's traceback."""
    text = str(err).strip()
    if "Original Traceback" in text:
        text = [line for line in text.splitlines() if line.strip()][-1]
        text = text.split(": ", 1)[1] if text.split(": ", 1)[0].endswith(type(err).__name__) else text
    return text


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed
    try:
        return installed("evolq_pl")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def ckpt_argument(argv: list[str]) -> str | None:
    """The value of ``--ckpt_path`` on a command line."""
    for i, arg in enumerate(argv):
        if arg.startswith("--ckpt_path="):
            return arg.split("=", 1)[1]
        if arg == "--ckpt_path" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] in ("--version", "-V"):
        print(f"evolq-pl {version()}")
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}; accepted: {', '.join(COMMANDS)}\n\n{usage()}", file=sys.stderr)
        return 2
    argv = resolve_config_args(argv)
    if COMMANDS[name].module:
        importlib.import_module(COMMANDS[name].module).main(argv[1:])
        return 0
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from evolq_pl.models.factory import CheckpointError
    from evolq_pl.cli.trainer_cli import EvolQCLI, quiet_expected_warnings
    quiet_expected_warnings()
    try:
        EvolQCLI(args=argv)
    except pickle.UnpicklingError as err:  # a --ckpt_path alias (last, hpc) Lightning resolved and refused itself
        first = str(err).strip().splitlines()[0].split(". ")[0]  # torch's first sentence
        raise CheckpointError(f"--ckpt_path={ckpt_argument(argv)!r}: not a weights-only checkpoint, refused "
                              f"({first})") from None
    except SIGTERMException:  # Lightning's is a SystemExit with status 0: the run did not finish, say so
        resume = " (resume: the same command with --ckpt_path <its last.ckpt>)" if name == "fit" else ""
        print(f"error: {name} stopped by SIGTERM before it finished{resume}", file=sys.stderr)
        return SIGTERM_EXIT
    return 0


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    show_traceback = os.environ.get("EVOLQ_TRACEBACK", "") not in ("", "0") or "--traceback" in argv
    argv = [a for a in argv if a != "--traceback"]
    try:
        status = dispatch(argv)
    except Exception as err:
        found = None if show_traceback else user_error(err)
        if found is None:
            raise
        hint = "" if isinstance(found, UsageError) else "\n(full traceback: EVOLQ_TRACEBACK=1)"
        print(f"error: {one_line(found)}{hint}", file=sys.stderr)
        status = 2
    sys.exit(status)
