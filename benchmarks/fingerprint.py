"""A fingerprint of what decides the accuracy records' numbers: the bits of a fixed small calibration + search
on each shipped reference model, with the paper's search and with the preset's options, and the images and
labels the records' data modules give (seed 0's calibration set, the test split, the validation split).

A refactor that keeps every bit keeps the fingerprint (and so the records' validity); a change that moves one
scale or one logit changes it. The bits also depend on the CPU's kernels (without the data part, the same code
gave 186bab399f07f1a0 on the machine that measured the first fingerprinted records and 52e009d01e5900d1 on an
AMD EPYC with AVX512), so records store the fingerprint, the platform that measured them and the definition
of the fingerprint (``DEFINITION``, this file's hash). A record holds for the working tree (``holds``) when it
was measured on this platform, under this definition, with the working tree's fingerprint; or when it was
measured by the command line on a clean tree, with the shipped configs as they are now, by a commit whose code
gives the working tree's fingerprint on this machine (``fingerprint_of``). The fingerprint does not run the
Lightning glue or the command line: a change there that moves numbers escapes it, and only a rerun finds it
(``accuracy --verify``, on the kind of CPU that measured the records: per-image results reproduce only there).
``python -m benchmarks.report --check`` refuses records that do not hold.

    python -m benchmarks.fingerprint                # the working tree's fingerprint (~35 s on 2 cores)
    python -m benchmarks.fingerprint --commit C     # C's package, on this machine
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from evolq_pl import QuantConfig, calibrate, create_quant_model, search_units
from evolq_pl.models.reference import reference_model
from evolq_pl.search import FitnessEvaluator, SearchConfig, SearchDriver

MODELS = ("deit_fmnist", "levit_fmnist")
SMALL = dict(passes=1, population=4, tournament=2, cycles=2, seed=0, compile_backend=None)
SEARCHES = (SMALL, {**SMALL, "include_embed": True, "relative_mutation": True, "relative_range": 0.05})
ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "benchmarks" / "results" / "fingerprints.json"  # {platform / definition: {commit: fingerprint}}
DEFINITION = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:8]  # what a fingerprint means


def _model_bits(name: str, search: dict, h: "hashlib._Hash") -> None:
    ref = reference_model(name)
    model = create_quant_model(ref["model_name"], QuantConfig(w_bits=3), checkpoint_path=ref["path"],
                               checkpoint_sha256=ref["sha256"], **ref["model_kwargs"])
    chans, size = ref["model_kwargs"].get("in_chans", 3), ref["image_size"]
    images = torch.rand(64, chans, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    batches = list(images.split(32))
    calibrate(model, batches)
    cfg = SearchConfig(**search)
    units = search_units(model, cfg.include_mlp, cfg.include_acts, cfg.include_embed)
    SearchDriver(units, cfg, FitnessEvaluator(model, batches, cfg)).run()
    with torch.no_grad():
        for key, tensor in sorted(model.state_dict().items()):
            if key.endswith((".scale", ".zero_point")):
                h.update(key.encode() + tensor.contiguous().numpy().tobytes())
        h.update(model(batches[0]).contiguous().numpy().tobytes())


def _data_bits(name: str, h: "hashlib._Hash") -> None:
    from evolq_pl.lightning import FashionMNISTDataModule

    size = reference_model(name)["image_size"]
    for split in ({}, {"val_size": 10_000, "eval_split": "val"}):  # accuracy.py's VAL_SIZE
        dm = FashionMNISTDataModule(image_size=size, batch_size=500, calib_size=1000, seed=0, **split)
        calib = dm.calibration_data()
        tensors = [calib.images, calib.labels, *(t for batch in dm.eval_dataloader() for t in batch)]
        for t in tensors:
            h.update(t.contiguous().numpy().tobytes())


@functools.cache
def fingerprint() -> str:
    """The working tree's fingerprint (16 hex digits), computed once per process."""
    h = hashlib.sha256()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the bits of a reduction may depend on how it is split over threads
    try:
        for name in MODELS:
            _data_bits(name, h)
            for search in SEARCHES:
                _model_bits(name, search, h)
    finally:
        torch.set_num_threads(threads)
    return h.hexdigest()[:16]


@functools.cache
def platform_id() -> str:
    """What decides the kernels' rounding besides the code: CPU model, ATen's vector ISA, torch build."""
    model = platform.processor() or platform.machine()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model} / {torch.backends.cpu.get_cpu_capability()} / torch {torch.__version__}"


INCOMPATIBLE = 3  # the child's exit status when a commit's package lacks what this fingerprint calls
_CHILD = """
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]  # tmp's package only
try:
    import benchmarks.fingerprint as fp
    value = fp.fingerprint()
except (ImportError, AttributeError, TypeError) as err:
    print(f"incompatible: {type(err).__name__}: {err}", file=sys.stderr)
    raise SystemExit(3)
outside = sorted({m.__file__ for n, m in sys.modules.items() if n.startswith("evolq_pl") and getattr(m, "__file__", None)
                  and not m.__file__.startswith(sys.argv[1])})
if outside:
    raise SystemExit(f"modules from outside the commit's package: {outside[:3]}")
print(value)
"""


def _run_at(commit: str) -> str | None:
    """Run the fingerprint on ``commit``'s ``evolq_pl/`` (extracted by ``git archive``) in a fresh process that
    can import nothing else of the package (the editable install's finder is removed, every module checked).
    None: that code cannot run it. Raises on any other failure (not a property of the commit: not cached)."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "archive", commit, "evolq_pl"], cwd=ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([tmp, str(ROOT)])}
        out = subprocess.run([sys.executable, "-c", _CHILD, tmp], cwd=tmp, env=env, capture_output=True, text=True,
                             timeout=1800)
    if out.returncode == INCOMPATIBLE:
        return None
    value = out.stdout.split()[-1] if out.stdout.split() else ""
    if out.returncode != 0 or not re.fullmatch(r"[0-9a-f]{16}", value):
        raise RuntimeError(f"fingerprint of {commit} failed ({out.returncode}): {out.stderr[-1000:]}")
    return value


def fingerprint_of(commit: str) -> str | None:
    """The fingerprint, on this machine, of ``commit``'s package; None when that code cannot run it (an older
    API). Cached per platform and definition of the fingerprint (this file's sha256) in results/fingerprints.json,
    merged and replaced atomically."""
    where = f"{platform_id()} / definition {DEFINITION}"
    cached = json.loads(CACHE.read_text()).get(where, {}) if CACHE.exists() else {}
    if commit in cached:
        return cached[commit]
    value = _run_at(commit)
    cache = json.loads(CACHE.read_text()) if CACHE.exists() else {}  # what others wrote meanwhile
    cache.setdefault(where, {})[commit] = value
    tmp = CACHE.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(cache, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, CACHE)
    return value


def _configs(commit: str | None) -> dict[str, Any]:
    """The shipped configs (parsed: a comment does not count) at ``commit`` (None: the working tree)."""
    import yaml
    if commit is None:
        return {str(p.relative_to(ROOT)): yaml.safe_load(p.read_text()) for p in (ROOT / "configs").rglob("*.yaml")}
    names = subprocess.run(["git", "ls-tree", "-r", "--name-only", commit, "configs"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    return {n: yaml.safe_load(subprocess.run(["git", "show", f"{commit}:{n}"], cwd=ROOT, capture_output=True,
                                             text=True, check=True).stdout) for n in names if n.endswith(".yaml")}


def holds(record: dict[str, Any], current: str) -> bool:
    """Whether an accuracy record holds for the working tree of fingerprint ``current`` (module docstring).

    Measured here with this definition of the fingerprint: its fingerprint decides. Otherwise only a record of
    the command-line era (one that stored its ``evolq-pl fit`` command and a fingerprint) whose tree was clean,
    measured with the shipped configs as they are now, by a commit whose code gives ``current`` here."""
    if record.get("platform") == platform_id() and record.get("definition") == DEFINITION:
        return record.get("fingerprint") == current
    machine = record.get("machine", {})
    if not (record.get("command") and record.get("fingerprint") and machine.get("commit")) or machine.get("dirty"):
        return False
    commit = machine["commit"]
    return fingerprint_of(commit) == current and _configs(commit) == _configs(None)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commit", help="fingerprint this commit's package instead of the working tree's")
    args = parser.parse_args()
    print(fingerprint() if args.commit is None else fingerprint_of(args.commit))
