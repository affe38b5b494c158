"""jsonargparse's report of a bad ``--config``/``--x.y`` value, folded to the one line a user can act on.

A typo in a nested option is reported by jsonargparse as a tree of Union alternatives (~60 lines); what matters
is the full key, the value and what is accepted:

    model.init_args.serch.passes: not an option of EvolQModule; did you mean model.init_args.search.passes?
    model.init_args.search.passes='abc': expected int
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import re
import typing
from typing import Any

from evolq_pl.cli.argv import UsageError

# lines of the report that describe its structure, not the problem
_STRUCTURE = ("Does not validate against", "Subtypes:", "Errors:", "Given value type:", "Given value:",
              "Expected a <class 'NoneType'>")
_UNKNOWN = (re.compile(r"unrecognized arguments: --([^=\s]+)"), re.compile(r"Option '([^']+)' is not accepted"))
_EXPECTED = re.compile(r"Expected a <class '([^']+)'>(?:\. Got value: (.*))?")


class ArgumentsError(UsageError):
    pass


def _import(path: str) -> Any:
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None


def _dataclass_in(annotation: Any) -> Any:
    """The dataclass an annotation names (``X`` or ``X | None``), else None."""
    for t in (annotation, *typing.get_args(annotation)):
        if dataclasses.is_dataclass(t):
            return t
    return None


def options(cls: Any) -> list[str]:
    """The keys a class takes under ``init_args``: its parameters, and ``param.field`` for dataclass parameters."""
    if cls is None:
        return []
    target = cls if dataclasses.is_dataclass(cls) else cls.__init__
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # an annotation that does not resolve here: parameter names only
        hints = {}
    out = []
    for name, p in inspect.signature(target).parameters.items():
        if name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        out.append(name)
        inner = _dataclass_in(hints.get(name))
        out += [f"{name}.{f.name}" for f in dataclasses.fields(inner)] if inner else []
    return out


def _given_value(lines: list[str], start: int) -> str | None:
    for line in lines[start:]:
        if line.strip().startswith("Given value:"):
            return line.strip().removeprefix("Given value:").strip()
    return None


def condense(message: str) -> str:
    """One line from jsonargparse's (possibly nested) error report."""
    lines = message.strip().splitlines()
    if len(lines) <= 1:
        return message.strip()
    path: list[str] = []
    owner = None  # the innermost class whose options the key is one of
    for i, line in enumerate(lines):
        text = line.strip().removeprefix("- ")
        if m := re.match(r'Parser key "([^"]+)":', text):
            path.append(m[1])
        elif m := re.match(r"Problem with given class_path '([^']+)':", text):
            owner = _import(m[1])
            path += [] if dataclasses.is_dataclass(owner) else ["init_args"]
        elif text and not text.startswith(_STRUCTURE):
            return _reason(text, path, owner, _given_value(lines, i))
    return lines[0].strip()


def _reason(text: str, path: list[str], owner: Any, given: str | None) -> str:
    where = ".".join(path)
    for pattern in _UNKNOWN:
        if m := pattern.search(text):
            key = m[1]
            close = difflib.get_close_matches(key, options(owner), n=1, cutoff=0.6)
            hint = f"; did you mean {where}.{close[0]}?" if close else f"; accepted: {', '.join(options(owner))}"
            return f"{where}.{key}: not an option of {getattr(owner, '__name__', 'this class')}{hint}"
    if m := _EXPECTED.match(text):
        value = m[2] if m[2] is not None else given
        return f"{where}={value!r}: expected {m[1]}"
    return f"{where}: {text}" if where else text
