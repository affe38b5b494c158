"""Landscape roughness on the DeiT-shaped reference model at W3A8, W4A8, W8A8 (issue 8).

    python -m benchmarks.landscape [--units 0 5] [--steps 21] [--radius 0.05] [--directions 0 1]

For each bit width, unit and seeded direction: a 1-D sweep of the unit's scales (relative radius), with
each fitness loss, calibration cross-entropy and top-1 on 2,000 test images; roughness = total variation /
range (1 = monotone, 2 = one bowl) and the number of interior local minima. Writes
benchmarks/results/landscape.json, one PNG per bit width (unit 5, direction 0), and a BENCHMARKS.md table.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
from pathlib import Path

from benchmarks.report import RESULTS, machine, machine_line, table, update_section, write_json
from evolq_pl.cli.landscape import run
from evolq_pl.models.reference import reference_model
from evolq_pl.search.landscape import SweepSpec

CONFIG = "configs/fmnist/deit.yaml"
METRICS = ("infonce", "mse", "kl", "cosine", "ce", "top1")


def section(data: dict) -> str:
    records, m = data["records"], data["machine"]
    bit_widths = sorted({r["w_bits"] for r in records})
    units = sorted({r["unit"] for r in records})
    directions = sorted({r["direction_seed"] for r in records})
    rows = []
    for bits in bit_widths:
        rs = [r for r in records if r["w_bits"] == bits]
        row = [f"W{bits}A8"]
        for metric in METRICS:
            tv = statistics.mean(r["roughness"][metric]["tv_over_range"] for r in rs)
            mins = statistics.mean(r["roughness"][metric]["local_minima"] for r in rs)
            row.append(f"{tv:.2f} / {mins:.1f}")
        span = statistics.mean(max(x["infonce"] for x in r["rows"]) - min(x["infonce"] for x in r["rows"]) for r in rs)
        row.append(f"{span:.2e}")
        rows.append(row)
    sha = reference_model("deit_fmnist")["sha256"]
    return (f"## Loss landscape roughness\n\n`python -m benchmarks.landscape` — DeiT-shaped reference model "
            f"(checkpoint `{sha[:8]}`), 1-D sweeps s·(1 + a·d), a ∈ [−{data['radius']}, {data['radius']}] in "
            f"{data['steps']} steps at every bit width, units {units}, direction seeds {directions} (means over "
            f"{len(units) * len(directions)} curves per row). Cell = total variation / range (1 monotone, 2 one "
            f"bowl, higher = more jagged) / interior local minima. top-1 on 2,000 test images (0.05-point steps). "
            f"The same relative radius crosses about 2^b times more rounding boundaries at b bits, and four curves "
            f"give no spread: the rows are not comparable across bit widths. {machine_line(m)}\n\n"
            + table(["bits", *METRICS, "infoNCE range"], rows)
            + "\n\n" + " ".join(f"![W{b}](benchmarks/results/landscape_w{b}a8.png)" for b in bit_widths))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--units", nargs="+", type=int, default=[0, 5])
    p.add_argument("--bits", nargs="+", type=int, default=[3, 4, 8])
    p.add_argument("--directions", nargs="+", type=int, default=[0, 1])
    p.add_argument("--steps", type=int, default=21)
    p.add_argument("--radius", type=float, default=0.05)
    args = p.parse_args()
    records = []
    for bits in args.bits:
        for unit in args.units:
            for seed in args.directions:
                out = Path("runs/landscape") / f"w{bits}_u{unit}_d{seed}"
                result = run([CONFIG], SweepSpec(unit, args.radius, args.steps, 1, seed), out, eval_size=2000,
                             extra=["--model.init_args.quant.w_bits", str(bits)])
                records.append({"w_bits": bits, "unit": unit, "direction_seed": seed, "roughness": result["roughness"],
                                "rows": result["rows"]})
                if unit == args.units[-1] and seed == args.directions[0]:
                    shutil.copy(out / "landscape.png", RESULTS / f"landscape_w{bits}a8.png")
                print(f"W{bits} unit {unit} dir {seed}: " + ", ".join(
                    f"{m} {r['tv_over_range']:.2f}" for m, r in result["roughness"].items()), flush=True)
    m = machine()
    write_json("landscape", {"records": records, "machine": m, "radius": args.radius, "steps": args.steps})
    md = section({"records": records, "machine": m, "radius": args.radius, "steps": args.steps})
    update_section("landscape")
    print(md)


if __name__ == "__main__":
    main()
