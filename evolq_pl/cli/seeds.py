"""Run one config for several seeds (one process per GPU, or one after another on CPU) and summarise.

    evolq-pl seeds --config configs/imagenet/base.yaml --config configs/imagenet/deit_small_w4a8.yaml \\
        --seeds 0 1 2 --gpus 0 1 2 --out runs/seeds/deit_small_w4a8 [--model.init_args.X value …: fit's options, passed on]

Each seed runs ``evolq-pl fit`` with the search seed and the calibration-subset seed set to it, and keeps
everything (logs, checkpoints, results.json) in ``<out>/seed<k>/``; then ``summary.md`` and ``summary.csv`` are
written by ``evolq_pl.report.seeds`` (mean ± std per metric, and the paired comparison of Evol-Q with the init).

Rerunning into the same ``--out`` skips finished seeds of the same settings, resumes an interrupted seed from
its last.ckpt, and refuses a folder that holds a run with other settings. Settings are compared as fit's parser
resolves them (``seed<k>/run.json`` records them), so the order of the overrides, ``--k=v`` or ``--k v``, and
which config file set a value do not matter; what differs per seed by design (the seeds, the output folders) is
left out. ``--print_commands`` prints one command per seed (for a cluster scheduler) and runs nothing;
``--summary_only`` aggregates afterwards.

A seed folder is locked (``seed<k>/.lock``, holding the pid) while a seeds command runs in it; its ``fit``
holds the lock too, so a second seeds command on the same folder is refused even after the first one was
killed. SIGTERM or SIGINT is passed on to the running ``fit`` processes (which stop at their next step and
keep their last.ckpt); seeds waits for them, then exits with 128 + the signal number.
"""
from __future__ import annotations

import fcntl
import io
import json
import os
import shlex
import signal
import subprocess
import sys
from contextlib import ExitStack, contextmanager, redirect_stdout
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Callable, Iterator

import yaml

from evolq_pl.cli.argv import command_parser
from evolq_pl.io import write_text_atomic
from evolq_pl.report.seeds import SeedsError, finished, refuse_other_settings, seed_dir, summarise, sweep_settings

# arguments the seeds command sets for every seed itself
SEED_OWNED = ("--run_dir", "--ckpt_path", "--model.init_args.search.seed", "--data.init_args.seed", "--seed_everything")
LOCK = ".lock"
USAGE_EXIT = 2  # the status of a one-line error (a bad value, a config): the same command fails the same way


class SeedsInterrupted(SeedsError):
    """SIGTERM/SIGINT reached seeds; its running fits got it too and have exited."""

    def __init__(self, signum: int, stopped: list[int]) -> None:
        self.signum = signum
        name = signal.Signals(signum).name
        passed = f"passed on to the fit of seed(s) {stopped}, which have exited" if stopped else "no fit was running"
        super().__init__(f"seeds stopped by {name} ({passed}); rerun the same command to resume")


def fit_settings(configs: list[str], extra: list[str]) -> dict[str, Any]:
    """The settings every seed's ``fit`` runs with, as fit's own parser resolves them (so neither the order of the
    overrides nor ``--k=v`` vs ``--k v`` matters, and an edited config file does), less what differs per seed.
    Parsed in this process through ``--print_config``, which prints the config and exits before anything is built."""
    from evolq_pl.cli.trainer_cli import EvolQCLI, quiet_expected_warnings  # Lightning: only when seeds run
    quiet_expected_warnings()
    printed = io.StringIO()
    try:
        with redirect_stdout(printed):
            EvolQCLI(args=["fit", *(a for c in configs for a in ("--config", c)), *extra, "--print_config"])
    except SystemExit as stop:  # --print_config's way out; an argument fit refuses raises its one line instead
        if stop.code not in (0, None):
            raise
    config = yaml.safe_load(printed.getvalue())
    if not isinstance(config, dict):
        raise SeedsError(f"fit's parser printed no config for --config={configs} with {extra}; run evolq-pl fit "
                         "with them and --print_config to see why")
    return sweep_settings(config)


def last_checkpoint(run_dir: Path) -> Path | None:
    found = sorted(run_dir.rglob("last*.ckpt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def seed_command(configs: list[str], seed: int, out: Path, extra: list[str]) -> list[str]:
    """The child ``fit`` of one seed, through the package (works from any install), resuming if it can."""
    run_dir = seed_dir(out, seed)
    cmd = [sys.executable, "-m", "evolq_pl", "fit", *(a for c in configs for a in ("--config", c))]
    cmd += ["--model.init_args.search.seed", str(seed), "--data.init_args.seed", str(seed),
            "--seed_everything", str(seed), "--run_dir", str(run_dir), *extra]
    ckpt = last_checkpoint(run_dir) if not finished(out, seed) else None
    return cmd + (["--ckpt_path", str(ckpt)] if ckpt else [])


def note_holder(fd: int, pid: int) -> None:
    """Write ``pid`` into the lock file ``fd`` (what a refused second command names)."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{pid}\n".encode(), 0)


@contextmanager
def seed_lock(folder: Path) -> Iterator[int]:
    """Hold ``folder``'s lock for the block (``flock`` on ``folder/.lock``; yields its descriptor). Refuses a
    folder another live process holds; a lock file left by a dead process does not block (the kernel releases
    a ``flock`` with the last process holding it)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise SeedsError(f"{folder} is in use by process {holder} (a fit of another seeds command); wait for "
                         "it to end or stop it, then rerun") from None
    try:
        note_holder(fd, os.getpid())
        yield fd
    finally:
        os.close(fd)


class SignalForwarder:
    """Inside the block, SIGTERM and SIGINT to this process are passed on to every child added (which stop
    cleanly) instead of stopping this process; ``received`` lists them. The previous handlers come back after."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.children: list[subprocess.Popen] = []
        self.received: list[int] = []
        self.signalled: set[int] = set()  # pids of the children a signal was passed on to
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "SignalForwarder":
        self._previous = {s: signal.signal(s, self._forward) for s in self.SIGNALS}
        return self

    def __exit__(self, kind: type | None, err: BaseException | None, tb: TracebackType | None) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _forward(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)
        for child in self.children:
            self._pass_on(child, signum)

    def _pass_on(self, child: subprocess.Popen, signum: int) -> None:
        if child.poll() is None:
            child.send_signal(signum)
            self.signalled.add(child.pid)

    def add(self, child: subprocess.Popen) -> None:
        self.children.append(child)
        if self.received:  # a signal that came while it was being started
            self._pass_on(child, self.received[-1])


def check_arguments(configs: list[str], extra: list[str]) -> None:
    for c in configs:
        if not Path(c).is_file():
            raise SeedsError(f"--config={c!r}: no such file")
    owned = [a for a in extra if a.split("=")[0] in SEED_OWNED]
    if owned:
        raise SeedsError(f"{owned[0].split('=')[0]} is set per seed by the seeds command; remove it")


def plan(configs: list[str], seeds: list[int], out: Path, extra: list[str],
         settings: dict[str, Any] | None = None) -> list[int]:
    """Seeds still to run; refuses a seed folder that holds a run of other settings (``settings``: those of
    ``configs`` and ``extra``, parsed here when not given)."""
    check_arguments(configs, extra)
    todo = []
    for seed in seeds:
        marker = seed_dir(out, seed) / "run.json"
        if marker.exists():
            settings = fit_settings(configs, extra) if settings is None else settings
            refuse_other_settings(marker, out, configs, extra, settings)
            if finished(out, seed):
                print(f"seed {seed}: finished earlier with the same settings, skipped", file=sys.stderr)
                continue
        todo.append(seed)
    return todo


def mark(configs: list[str], seed: int, out: Path, extra: list[str], settings: dict[str, Any] | None = None) -> None:
    """Record in the seed's folder which settings it runs (read by ``plan`` on a rerun)."""
    settings = fit_settings(configs, extra) if settings is None else settings
    seed_dir(out, seed).mkdir(parents=True, exist_ok=True)
    write_text_atomic(seed_dir(out, seed) / "run.json", json.dumps(
        {"settings": settings, "configs": configs, "extra": extra, "seed": seed}, indent=1))


def start_seed(configs: list[str], seed: int, out: Path, extra: list[str], gpu: str | None, lock: int,
               settings: dict[str, Any] | None = None) -> subprocess.Popen:
    """The seed's ``fit`` (seeing only ``gpu``), in its own session (a terminal's Ctrl-C reaches it once, through
    seeds), holding the seed folder's lock with seeds."""
    env = dict(os.environ)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    mark(configs, seed, out, extra, settings)
    child = subprocess.Popen(seed_command(configs, seed, out, extra), env=env, pass_fds=(lock,),
                             start_new_session=True)
    note_holder(lock, child.pid)
    return child


def run_seeds(configs: list[str], seeds: list[int], out: Path, gpus: list[str], extra: list[str],
              settings: dict[str, Any] | None = None) -> None:
    """Waves of one process per GPU (each sees only its device); sequential on CPU. A seed that exits
    non-zero or writes no results.json is a failure; the others still run. SIGTERM/SIGINT: passed on to the
    running fits, which are waited for; no further wave starts (``SeedsInterrupted``)."""
    slots, exits = gpus or [None], {}
    settings = fit_settings(configs, extra) if settings is None and seeds else settings
    with ExitStack() as stack:
        locks = {seed: stack.enter_context(seed_lock(seed_dir(out, seed))) for seed in seeds}
        forwarder = stack.enter_context(SignalForwarder())
        for start in range(0, len(seeds), len(slots)):
            if forwarder.received:
                break
            exits.update(run_wave(list(zip(seeds[start:start + len(slots)], slots)), forwarder,
                                  lambda seed, gpu: start_seed(configs, seed, out, extra, gpu, locks[seed], settings)))
    if forwarder.received:
        pids = forwarder.signalled
        raise SeedsInterrupted(forwarder.received[0], [s for s, (pid, _) in exits.items() if pid in pids])
    failed = [(s, code) for s, (_, code) in exits.items() if code != 0 or not finished(out, s)]
    if failed:
        raise SeedsError(failure_message(failed, lambda seed: can_resume(out, seed)))


def run_wave(wave: list[tuple[int, str | None]], forwarder: SignalForwarder,
             start: Callable[[int, str | None], subprocess.Popen]) -> dict[int, tuple[int, int]]:
    """Start one fit per (seed, gpu) and wait for every one started, even when starting another fails (no fit
    is left running unattended); seed → (pid, exit status)."""
    procs: list[tuple[int, subprocess.Popen]] = []
    try:
        for seed, gpu in wave:
            procs.append((seed, start(seed, gpu)))
            forwarder.add(procs[-1][1])
    finally:
        exits = {seed: (p.pid, p.wait()) for seed, p in procs}
    return exits


def can_resume(out: Path, seed: int) -> bool:
    """Whether a rerun resumes this seed: its folder holds a checkpoint, or results that list what is missing
    (a failed measurement or checkpoint write ends in a one-line error too)."""
    folder = seed_dir(out, seed)
    return last_checkpoint(folder) is not None or ((folder / "results.json").exists() and not finished(out, seed))


def failure_message(failed: list[tuple[int, int]], resumable: Callable[[int], bool] = lambda seed: False) -> str:
    """Which seeds failed; the resume hint only for those a rerun can resume: not a one-line error's exit 2
    before any search state was written (a bad value, a config: the same command fails the same way)."""
    named = lambda group: ", ".join(f"seed {s} (exit {code})" for s, code in group)  # noqa: E731
    refused = [(s, c) for s, c in failed if c == USAGE_EXIT and not resumable(s)]
    resume = [(s, c) for s, c in failed if (s, c) not in refused]
    parts = [f"{named(resume)} did not finish; rerun the same command to resume them"] if resume else []
    if refused:
        parts.append(f"{named(refused)} stopped on an error (its one line is above): the same command would fail "
                     "the same way; fix what it names, then rerun")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser, argv, extra = command_parser("seeds", __doc__, argv)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--gpus", nargs="*", default=[], help="device ids; one process per device")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_flag("--summary_only", "--summary-only", help="aggregate finished seeds, run nothing")
    parser.add_flag("--print_commands", "--print-commands",
                    help="print one fit command per seed still to run (for a scheduler), run nothing")
    args, extra = parser.parse_command(argv, extra)
    out: Path = args.out.resolve()  # printed commands work from any folder
    configs = [str(Path(c).resolve()) for c in args.config]
    if not args.summary_only:
        check_arguments(configs, extra)  # a missing config is named before fit's parser reads it
        settings = fit_settings(configs, extra)
        todo = plan(configs, args.seeds, out, extra, settings)
        if args.print_commands:
            for seed in todo:
                with seed_lock(seed_dir(out, seed)):  # not a folder a fit runs in now
                    mark(configs, seed, out, extra, settings)
                print(shlex.join(seed_command(configs, seed, out, extra)))
            return
        try:
            run_seeds(configs, todo, out, args.gpus, extra, settings)
        except SeedsInterrupted as stop:
            print(f"error: {stop}", file=sys.stderr)
            raise SystemExit(128 + stop.signum) from None
    summarise(out, args.seeds)
    print((out / "summary.md").read_text())
