"""Argument helpers shared by the extra CLI commands (``seeds``, ``landscape``, ``export``)."""
from __future__ import annotations

import argparse
import sys

from evolq_pl.errors import EvolQError


class UsageError(EvolQError):
    """A bad command line (unknown option or config, a value of the wrong type): one line, no traceback hint."""


# options that belong to ``fit``'s parser: given to export/landscape/seeds, they are passed on to it
PASSED_ON = ("--model", "--data", "--trainer", "--seed_everything")


def flag(value: str) -> bool:
    """``--overwrite``, ``--overwrite true`` and ``--overwrite false`` alike (fit's style)."""
    if value.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"{value!r}: accepted: true, false")
    return value.lower() == "true"


class CommandParser(argparse.ArgumentParser):
    """The parser of an extra command, in ``fit``'s style: its own options, and ``--model.*``/``--data.*``/
    ``--trainer.*`` given directly (``--`` before them is accepted too); errors are one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")

    def add_flag(self, *names: str, help: str) -> None:
        self.add_argument(*names, type=flag, nargs="?", const=True, default=False, metavar="{true,false}", help=help)

    def parse_command(self, own: list[str], passed_on: list[str]) -> tuple[argparse.Namespace, list[str]]:
        """(this command's arguments, the arguments passed on to ``fit``'s parser)."""
        args, unknown = self.parse_known_args(own)
        stray = [a for a in unknown if a.startswith("--") and not a.split("=")[0].startswith(PASSED_ON)]
        if stray or (unknown and not unknown[0].startswith("--")):
            own_options = [a.option_strings[0] for a in self._actions
                           if a.option_strings and not isinstance(a, argparse._HelpAction)]
            raise UsageError(f"{self.prog}: unrecognized arguments: {' '.join(stray or unknown[:1])} (accepted: "
                             f"{', '.join(own_options)}, and fit's --model.*, --data.*, --trainer.*)")
        return args, unknown + passed_on


def command_parser(name: str, doc: str | None, argv: list[str] | None
                   ) -> tuple[CommandParser, list[str], list[str]]:
    """Parser for ``evolq-pl <name>`` with the shared ``--config`` (repeatable) option, and the command's own
    arguments split from those after ``--``: (parser, own, passed on)."""
    argv = list(sys.argv[2:] if argv is None else argv)
    i = argv.index("--") if "--" in argv else len(argv)  # ``[own args] -- [args passed on to fit]``
    own, extra = argv[:i], argv[i + 1:]
    parser = CommandParser(prog=f"evolq-pl {name}", description=doc, allow_abbrev=False,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", required=True)
    return parser, own, extra
