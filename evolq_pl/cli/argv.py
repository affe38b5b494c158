"""Argument helpers shared by the extra CLI commands (``seeds``, ``landscape``, ``export``)."""
from __future__ import annotations

import argparse
import sys


class UsageError(ValueError):
    """A bad command line (unknown option or config, a value of the wrong type): one line, no traceback hint."""


def split_passthrough(argv: list[str]) -> tuple[list[str], list[str]]:
    """``[own args] -- [args passed on to cli.py fit]`` → (own, passed on)."""
    if "--" not in argv:
        return list(argv), []
    i = argv.index("--")
    return list(argv[:i]), list(argv[i + 1:])


def command_parser(name: str, doc: str | None, argv: list[str] | None
                   ) -> tuple[argparse.ArgumentParser, list[str], list[str]]:
    """Parser for ``cli.py <name>`` with the shared ``--config`` (repeatable) option, and the command's own
    arguments split from those passed on to ``cli.py fit``: (parser, own, passed on)."""
    own, extra = split_passthrough(sys.argv[2:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog=f"evolq-pl {name}", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", required=True)
    return parser, own, extra
