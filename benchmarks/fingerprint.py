"""A fingerprint of what decides the accuracy records' numbers: the bits of a fixed small calibration + search
on each shipped reference model, with the paper's search and with the preset's options, and the images and
labels the records' data modules give (seed 0's calibration set, the test split, the validation split).

A refactor that keeps every bit keeps the fingerprint (and so the records' validity); a change that moves one
scale or one logit changes it. The bits also depend on the CPU's kernels (the same code gave 186bab399f07f1a0 on
the machine that measured the first fingerprinted records and 52e009d01e5900d1 on an AMD EPYC with AVX512), so
records store the fingerprint *and* the platform that measured them. A record holds for the working tree when
it was measured on this platform with the working tree's fingerprint, or, from another platform or before
records carried a fingerprint, when the code of its commit gives on this machine the working tree's fingerprint
(``fingerprint_of``: that code computes the same bits; per-image results themselves reproduce only on the
platform that measured them). ``python -m benchmarks.report --check`` refuses records that do not hold.

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
CACHE = ROOT / "benchmarks" / "results" / "fingerprints.json"  # {platform: {commit: fingerprint}}, measured here


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


def fingerprint_of(commit: str) -> str | None:
    """The fingerprint, on this machine, of ``commit``'s package (its ``evolq_pl/`` run by this file's search);
    None when that code cannot run it (an older API). Cached per platform in ``results/fingerprints.json``."""
    cache = json.loads(CACHE.read_text()) if CACHE.exists() else {}
    known = cache.setdefault(platform_id(), {})
    if commit not in known:
        with tempfile.TemporaryDirectory() as tmp:
            archive = subprocess.run(["git", "archive", commit, "evolq_pl"], cwd=ROOT, capture_output=True)
            if archive.returncode != 0:
                return None
            subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([tmp, str(ROOT)])}
            out = subprocess.run([sys.executable, "-m", "benchmarks.fingerprint"], cwd=tmp, env=env,  # tmp first
                                 capture_output=True, text=True)
        known[commit] = out.stdout.split()[-1] if out.returncode == 0 and out.stdout.split() else None
        CACHE.write_text(json.dumps(cache, indent=2, sort_keys=True) + "\n")
    return known[commit]


def holds(record: dict[str, Any], current: str) -> bool:
    """Whether an accuracy record holds for the working tree of fingerprint ``current`` (module docstring)."""
    if record.get("fingerprint") is not None and record.get("platform") == platform_id():
        return record["fingerprint"] == current
    commit = record.get("machine", {}).get("commit")
    return commit is not None and fingerprint_of(commit) == current


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commit", help="fingerprint this commit's package instead of the working tree's")
    args = parser.parse_args()
    print(fingerprint() if args.commit is None else fingerprint_of(args.commit))
