"""The shipped configs, by name: ``evolq-pl fit --config demo`` reads ``configs/demo.yaml`` of the installed
package (a pip install carries them as ``evolq_pl/configs``; a checkout reads its top-level ``configs/``).

    evolq-pl configs                  # list the shipped configs by name
    evolq-pl configs fmnist/deit      # print one (copy it: evolq-pl configs fmnist/deit > my.yaml)

A ``--config`` value that names an existing file is that file; otherwise a shipped config's name (with or
without ``configs/`` and ``.yaml``) is the shipped file. A value that is neither is refused in one line with
the close matches.
"""
from __future__ import annotations

import argparse
import difflib
from pathlib import Path

from evolq_pl.cli.argv import UsageError

_PACKAGE = Path(__file__).resolve().parents[1]  # evolq_pl/


class ConfigNotFound(UsageError):
    pass


CONFIG_FLAGS = ("--config", "-c")  # LightningCLI registers both


def configs_dir() -> Path:
    """Where the shipped configs are: inside the installed package, or the checkout's top-level folder."""
    inside = _PACKAGE / "configs"
    return inside if inside.is_dir() else _PACKAGE.parent / "configs"


def shipped_configs() -> dict[str, Path]:
    """name (path under configs/, without .yaml) → file."""
    root = configs_dir()
    return {p.relative_to(root).with_suffix("").as_posix(): p for p in sorted(root.rglob("*.yaml"))}


def _name(value: str) -> str:
    return value.removeprefix("configs/").removesuffix(".yaml")


def resolve_config(value: str) -> str:
    """An existing file as given; else the shipped config of that name; else one line naming close matches."""
    if Path(value).is_file():
        return value
    shipped = shipped_configs()
    if _name(value) in shipped:
        return str(shipped[_name(value)])
    close = difflib.get_close_matches(_name(value), list(shipped), n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ConfigNotFound(f"--config={value!r} is neither a file nor a shipped config; {hint}"
                         f"list them with: evolq-pl configs")


def resolve_config_args(argv: list[str]) -> list[str]:
    """``argv`` with each ``--config X`` / ``--config=X`` / ``-c X`` value resolved (arguments after ``--`` too: they are
    passed on to ``fit``)."""
    out, expect = [], False
    for arg in argv:
        flag, eq, value = arg.partition("=")
        if expect:
            out.append(resolve_config(arg))
        elif eq and flag in CONFIG_FLAGS:
            out.append(f"{flag}={resolve_config(value)}")
        else:
            out.append(arg)
        expect = arg in CONFIG_FLAGS
    return out


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="evolq-pl configs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", help="print this shipped config (e.g. demo, fmnist/deit)")
    args = parser.parse_args(argv)
    if args.name:
        print(Path(resolve_config(args.name)).read_text(), end="")
        return
    for name, path in shipped_configs().items():
        first = next((line.lstrip("# ").strip() for line in path.read_text().splitlines() if line.startswith("#")), "")
        print(f"{name:32s} {first}")
