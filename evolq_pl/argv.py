"""Argument helper shared by the extra CLI commands (``seeds``, ``landscape``)."""
from __future__ import annotations


def split_passthrough(argv: list[str]) -> tuple[list[str], list[str]]:
    """``[own args] -- [args passed on to cli.py fit]`` → (own, passed on)."""
    if "--" not in argv:
        return list(argv), []
    i = argv.index("--")
    return list(argv[:i]), list(argv[i + 1:])
