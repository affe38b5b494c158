"""Calibration memory: the peak memory of ``calibrate()`` against a float forward of the same batch.

ViT-B/16 at 224 with realistic random weights, 2 batches of 100 seeded random images (batch and count are
options). On CPU the peak resident set (VmHWM, reset through /proc/self/clear_refs before each call) above the
level just before the call; on CUDA the maximum allocated above the allocation before the call. Target:
``calib_over_forward`` ≤ 2.0. On CPU the run also measures the peak of live tensor bytes (every allocation and
free PyTorch's CPU allocator reports to the profiler, summed in order): the CPU analogue of CUDA's max allocated,
free of what the C allocator keeps after a free (``live_calib_over_forward``; a second forward and calibration).

    python -m benchmarks.calibration_memory [--batch 100] [--batches 2] [--out PATH] [--no-report]

``results/calibration_memory_before.json``, when present, is the same measurement at an earlier commit (this
script run in a checkout of it with ``--out``), shown as the "before" row.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Callable

import torch

from benchmarks.common import RESULTS, benchmark_parser, machine, machine_line, record, table
from evolq_pl import QuantConfig, calibrate, create_quant_model, quant_disabled
from evolq_pl.models.random_weights import randomize_


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key))


def peak_above(fn: Callable[[], Any], device: torch.device) -> tuple[int, float]:
    """Bytes of memory at the peak of ``fn()`` above the level just before it, and its seconds."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        with open("/proc/self/clear_refs", "w") as f:  # resets the high-water mark to the current RSS
            f.write("5")
        before = _status_kib("VmRSS") * 1024
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = _status_kib("VmHWM") * 1024
    return peak - before, time.perf_counter() - start


def live_peak_above(fn: Callable[[], Any]) -> int:
    """Peak of live CPU tensor bytes during ``fn()`` above the level before it (profiler memory events)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:  # + bytes at an allocation, − at a free
        live += e.nbytes()
        peak = max(peak, live)
    return peak


@torch.no_grad()
def measure(name: str, batch: int, n: int, device: torch.device, live: bool = True) -> dict[str, Any]:
    m = machine()  # at the start: the commit whose code this process imports
    model = randomize_(create_quant_model(name, QuantConfig(w_bits=4))).to(device)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(batch, 3, 224, 224, generator=g).to(device) for _ in range(n)]
    with quant_disabled(model):
        forward, forward_s = peak_above(lambda: model(batches[-1]), device)
    calib, calib_s = peak_above(lambda: calibrate(model, batches), device)
    data = {"model": name, "batch": batch, "batches": n, "measure": "cuda_max_allocated" if device.type == "cuda"
            else "rss_high_water", "forward_peak_bytes": forward, "calibration_peak_bytes": calib,
            "calib_over_forward": calib / forward, "forward_seconds": forward_s, "calibration_seconds": calib_s,
            "malloc_arena_max": os.environ.get("MALLOC_ARENA_MAX"), "machine": m}
    if device.type == "cpu" and live:
        with quant_disabled(model):
            forward_live = live_peak_above(lambda: model(batches[-1]))
        calib_live = live_peak_above(lambda: calibrate(model, batches))  # a recalibration: the same work
        data.update(forward_live_bytes=forward_live, calibration_live_bytes=calib_live,
                    live_calib_over_forward=calib_live / forward_live)
    return data


def _row(label: str, d: dict[str, Any]) -> list[str]:
    gib = lambda b: f"{b / 2**30:.2f}" if b is not None else "-"  # noqa: E731
    live = d.get("live_calib_over_forward")
    return [label, d["machine"]["commit"], gib(d["forward_peak_bytes"]), gib(d["calibration_peak_bytes"]),
            f"**{d['calib_over_forward']:.2f}**", gib(d.get("forward_live_bytes")), gib(d.get("calibration_live_bytes")),
            f"**{live:.2f}**" if live is not None else "-", f"{d['calibration_seconds']:.0f}"]


def section(data: dict[str, Any], before: dict[str, Any] | None) -> str:
    masks_path = RESULTS / "calibration_memory_masks.json"
    masks = json.loads(masks_path.read_text()) if masks_path.exists() else None
    rows = ([_row("before (every quantizer kept its last input)", before)] if before is not None else []) + \
        ([_row("no kept input; an x-sized finiteness mask per quantizer input", masks)] if masks is not None else []) + \
        [_row("finiteness from one min/max pass; one OMSE/PTF error buffer", data)]
    arena_path = RESULTS / "calibration_memory_arena1.json"
    arena = json.loads(arena_path.read_text()) if arena_path.exists() else None
    live = data.get("live_calib_over_forward")
    verdict = (f"The target is {'met' if data['calib_over_forward'] <= 2.0 else 'not met'} on resident memory "
               f"({data['calib_over_forward']:.2f})" + (f" and {'met' if live <= 2.0 else 'not met'} on live tensor "
                                                         f"bytes ({live:.2f})." if live is not None else "."))
    found = "" if masks is None else (
        "Where the resident excess came from (a one-off trace, not part of this script): the finiteness check "
        "(`torch.isfinite(x).all()`) made a bool mask of every quantizer input, 15 MB at ViT-B batch 100, below "
        "glibc's raised mmap threshold (32 MB), so on the heap; glibc kept the freed masks resident and the heap grew "
        "~180 MB per block (traced with `mallinfo2` per module: heap 232 → 766 MB over three blocks, 224 MB in use). "
        "The check now reads one `aminmax` of the input (NaN propagates through it), with no mask.")
    if arena is not None and masks is not None:
        found += (f" Limiting glibc to one arena (`MALLOC_ARENA_MAX=1`) had not helped ({arena['calib_over_forward']:.2f}× "
                  f"at `{arena['machine']['commit']}`): the kept memory was the main heap itself.")
    return "\n".join([
        "## Calibration memory",
        f"`python -m benchmarks.calibration_memory`: {data['model']} at 224 (random weights), {data['batches']} "
        f"batches of {data['batch']}; peak {data['measure'].replace('_', ' ')} above the level before the call, "
        "and (CPU) the peak of live tensor bytes from the profiler's allocation events. Target `calib_over_forward` "
        "≤ 2.0. " + machine_line(data["machine"]), "",
        table(["code", "commit", "float forward, GiB (RSS)", "calibrate(), GiB (RSS)", "calib/forward (RSS)",
               "float forward, GiB (live)", "calibrate(), GiB (live)", "calib/forward (live)", "calibrate(), s"], rows),
        "",
        "Quantizers compute their parameters during the last calibration batch and keep no input (FQ-ViT's "
        "protocol); per-tensor observers read a view; OMSE/PTF form every candidate's error in one reused buffer. "
        "`calibrate()` also enters `no_grad` inside `inference_mode(False)` (which turns grad mode back on): "
        "with the weights' `requires_grad`, an autograd graph had kept every activation of the calibration "
        "forward alive (a one-off measurement with the same profiler method at batch 10: 18× a float forward's live "
        "bytes; 1.28× without it). " + verdict + " " + found,
    ])


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--model", default="vit_base_patch16_224")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--no-live", action="store_true", help="skip the live-bytes pass (CPU)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = measure(args.model, args.batch, args.batches, device, live=not args.no_live)
    # a run with glibc's arenas limited (MALLOC_ARENA_MAX) is its own record, beside the default one
    name = "calibration_memory" + (f"_arena{data['malloc_arena_max']}" if data["malloc_arena_max"] else "")
    record(name, data, args)
    print(json.dumps({k: v for k, v in data.items() if k != "machine"}, indent=1))


if __name__ == "__main__":
    main()
