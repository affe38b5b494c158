"""A fingerprint of what decides the accuracy records' numbers: the bits of a fixed small calibration + search
on each shipped reference model, with the paper's search and with the preset's options.

A refactor that keeps every bit keeps the fingerprint (and so the records' validity); a change that moves one
scale or one logit changes it. Records store the fingerprint of the code that measured them;
``python -m benchmarks.report --check`` refuses records whose fingerprint differs from the working tree's.

    python -m benchmarks.fingerprint        # prints the working tree's fingerprint (~20 s on 2 cores)
"""
from __future__ import annotations

import functools
import hashlib

import torch

from evolq_pl import QuantConfig, calibrate, create_quant_model, search_units
from evolq_pl.models.reference import reference_model
from evolq_pl.search import FitnessEvaluator, SearchConfig, SearchDriver

MODELS = ("deit_fmnist", "levit_fmnist")
SMALL = dict(passes=1, population=4, tournament=2, cycles=2, seed=0, compile_backend=None)
SEARCHES = (SMALL, {**SMALL, "include_embed": True, "relative_mutation": True, "relative_range": 0.05})


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


@functools.cache
def fingerprint() -> str:
    """The working tree's fingerprint (16 hex digits), computed once per process."""
    h = hashlib.sha256()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the bits of a reduction may depend on how it is split over threads
    try:
        for name in MODELS:
            for search in SEARCHES:
                _model_bits(name, search, h)
    finally:
        torch.set_num_threads(threads)
    return h.hexdigest()[:16]


if __name__ == "__main__":
    print(fingerprint())
