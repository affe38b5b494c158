"""Landscape roughness on the DeiT-shaped reference model at W3A8, W4A8, W8A8, with radii tied to each bit width.

    python -m benchmarks.landscape [--bits 3 4 8] [--units 5] [--directions 8] [--steps 21] [--eval-size 1000]

Two sweep families per bit width b, each over ``--directions`` seeded directions d ~ N(0, 1) of one unit's scales:
  mutation  s0 + a·d, a ∈ ±(``--mutation-multiple``)·r_b, r_b the paper's mutation range at b bits (1e-3 at ≤ 4,
            1e-4 at 8): the moves the search itself makes, in the units it makes them.
  step      s0·(1 + a·d), a ∈ ±(``--code-steps``)/2^(b−1): at |d| = 1 the largest weight code 2^(b−1) moves by that
            many quantization steps, so each bit width crosses about as many rounding boundaries.
Each point: every fitness loss, calibration cross-entropy and top-1 on ``--eval-size`` test images; roughness =
total variation / range (1 = monotone, 2 = one bowl) and interior local minima, mean ± std over directions.
The bit-width claim is the paired difference (same unit and direction seeds) between the lowest and highest
bit width with its 95 % t interval. Writes benchmarks/results/landscape.json, one PNG per bit width and the
BENCHMARKS.md section.
"""
from __future__ import annotations

import argparse
import statistics
from typing import Any

from benchmarks.common import RESULTS, machine, machine_line, table, update_section, write_json
from evolq_pl.cli.landscape import prepare
from evolq_pl.models.reference import reference_model
from evolq_pl.search.evolution import paper_mutation_range
from evolq_pl.search.landscape import SweepSpec, roughness
from evolq_pl.report.stats import describe, paired_comparison, verdict

CONFIG = "configs/fmnist/deit.yaml"
METRICS = ("infonce", "mse", "kl", "cosine", "ce", "top1")
# family → (perturbation mode, radius at b bits given the multiple, the radius's unit in words)
FAMILIES = {
    "mutation": ("absolute", lambda b, k: k * paper_mutation_range(b), "paper mutation ranges"),
    "step": ("relative", lambda b, k: k / 2 ** (b - 1), "quantization steps of the largest code"),
}


def _cells(rs: list[dict[str, Any]], metric: str) -> str:
    tv = [r["roughness"][metric]["tv_over_range"] for r in rs]
    mins = statistics.mean(r["roughness"][metric]["local_minima"] for r in rs)
    spread = f" ± {statistics.stdev(tv):.2f}" if len(tv) > 1 else ""
    return f"{statistics.mean(tv):.2f}{spread} / {mins:.1f}"


def bit_claims(records: list[dict[str, Any]], family: str) -> list[str]:
    """Lowest against highest bit width, paired by (unit, direction): TV/range of infoNCE and of top-1."""
    bits = sorted({r["w_bits"] for r in records})
    if len(bits) < 2:
        return []
    by = {(r["w_bits"], r["unit"], r["direction_seed"]): r for r in records if r["family"] == family}
    pairs = sorted({(u, d) for b, u, d in by if b == bits[0]} & {(u, d) for b, u, d in by if b == bits[-1]})
    out = []
    for metric in ("infonce", "top1"):
        tv = lambda b: [by[b, u, d]["roughness"][metric]["tv_over_range"] for u, d in pairs]  # noqa: E731
        p = paired_comparison(tv(bits[-1]), tv(bits[0]))
        out.append(f"{family}, {metric}: W{bits[0]} − W{bits[-1]} TV/range {describe(p, mcnemar=False)} over "
                   f"{len(pairs)} paired directions → {_words(verdict(p), bits)}")
    return out


def _words(v: str, bits: list[int]) -> str:
    return {"gain": f"more jagged at W{bits[0]}", "loss": f"less jagged at W{bits[0]}"}.get(v, v)


def section(data: dict) -> str:
    records, m = data["records"], data["machine"]
    rows = []
    for family in FAMILIES:
        for bits in sorted({r["w_bits"] for r in records}):
            rs = [r for r in records if r["w_bits"] == bits and r["family"] == family]
            if rs:
                span = statistics.mean(max(x["infonce"] for x in r["rows"]) - min(x["infonce"] for x in r["rows"])
                                       for r in rs)
                rows.append([family, f"W{bits}A8", f"±{rs[0]['radius']:.3g}", len(rs),
                             *(_cells(rs, metric) for metric in METRICS), f"{span:.2e}"])
    claims = [c for family in FAMILIES for c in bit_claims(records, family)]
    sha = reference_model("deit_fmnist")["sha256"]
    a = data["args"]
    return (f"## Loss landscape roughness\n\n`python -m benchmarks.landscape` — DeiT-shaped reference model "
            f"(checkpoint `{sha[:8]}`), units {a['units']}, {a['directions']} seeded directions per setting, "
            f"{a['steps']} grid points per sweep. Radius tied to the bit width b: `mutation` s0 + a·d with a "
            f"within ±{a['mutation_multiple']}× the paper's mutation range (1e-3 at ≤ 4 bits, 1e-4 at 8); `step` "
            f"s0·(1 + a·d) with a within ±{a['code_steps']}/2^(b−1) (the largest weight code moves by "
            f"{a['code_steps']} quantization steps at |d| = 1). Cell = total variation / range, mean ± std over "
            f"directions (sample std, ddof = 1) / mean interior local minima (1 monotone, 2 one bowl, higher = "
            f"more jagged); top-1 on {a['eval_size']:,} test images. TV/range ignores how far a curve moves: read it "
            f"with the infoNCE range column (a curve that barely moves is mostly rounding noise and reads as "
            f"jagged). {machine_line(m)}\n\n"
            + table(["family", "bits", "radius", "curves", *METRICS, "infoNCE range"], rows)
            + "\n\nBit-width claims (paired by unit and direction; a claim only where the 95 % interval excludes "
              "zero):\n\n" + "\n".join(f"- {c}" for c in claims)
            + "\n\n" + " ".join(f"![W{b}](benchmarks/results/landscape_w{b}a8.png)"
                                for b in sorted({r["w_bits"] for r in records})))


def history(old: dict) -> str:
    """BENCHMARKS_HISTORY.md: the earlier fixed-radius sweeps (±5 % at every bit width, 4 curves a row)."""
    rows = []
    for bits in sorted({r["w_bits"] for r in old["records"]}):
        rs = [r for r in old["records"] if r["w_bits"] == bits]
        rows.append([f"W{bits}A8", len(rs), *(_cells(rs, metric) for metric in METRICS)])
    return (f"## Loss landscape at a fixed radius (superseded)\n\nRelative radius ±{old['radius']} with "
            f"{old['steps']} points at every bit width, measured at commit `{old['machine']['commit']}`: a W8 "
            f"step crosses about 2^b times more rounding boundaries than the search's moves, and four curves a row "
            f"give no spread, so its rows are not comparable across bit widths. Replaced by the per-bit-width radii "
            f"in BENCHMARKS.md.\n\n" + table(["bits", "curves", *METRICS], rows) + "\n")


def plot(records: list[dict[str, Any]], bits: int, unit: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(FAMILIES), figsize=(10, 3.6))
    for ax, (family, (_, _, unit_words)) in zip(axes, FAMILIES.items()):
        for r in records:
            if (r["w_bits"], r["unit"], r["family"]) == (bits, unit, family):
                ax.plot([x["a"] / r["radius"] * r["multiple"] for x in r["rows"]], [x["infonce"] for x in r["rows"]],
                        lw=1, label=f"d{r['direction_seed']}")
        ax.set_xlabel(f"displacement ({unit_words})")
        ax.set_ylabel("infoNCE fitness")
        ax.set_title(f"W{bits}A8 unit {unit}: {family}")
    axes[0].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(RESULTS / f"landscape_w{bits}a8.png", dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bits", nargs="+", type=int, default=[3, 4, 8])
    p.add_argument("--units", nargs="+", type=int, default=[5])
    p.add_argument("--directions", type=int, default=8, help="direction seeds 0 … N−1 per setting")
    p.add_argument("--steps", type=int, default=21)
    p.add_argument("--mutation-multiple", type=float, default=5.0)
    p.add_argument("--code-steps", type=float, default=2.0)
    p.add_argument("--eval-size", type=int, default=1000)
    args = p.parse_args()
    if args.directions < 2:
        p.error(f"--directions {args.directions}: at least 2 (the spread over directions is reported)")
    multiples = {"mutation": args.mutation_multiple, "step": args.code_steps}
    records = []
    for bits in args.bits:
        land = prepare([CONFIG], eval_size=args.eval_size, extra=["--model.init_args.quant.w_bits", str(bits)])
        for family, (mode, radius_at, _) in FAMILIES.items():
            radius = radius_at(bits, multiples[family])
            for unit in args.units:
                for seed in range(args.directions):
                    rows = land.sweep(SweepSpec(unit, radius, args.steps, 1, seed, mode))
                    rough = {m: roughness([r[m] for r in rows]) for m in METRICS}
                    records.append({"w_bits": bits, "family": family, "radius": radius,
                                    "multiple": multiples[family], "unit": unit, "direction_seed": seed,
                                    "roughness": rough, "rows": rows})
                    print(f"W{bits} {family} unit {unit} dir {seed}: infoNCE TV/range "
                          f"{rough['infonce']['tv_over_range']:.2f}, top-1 {rough['top1']['tv_over_range']:.2f}",
                          flush=True)
        plot(records, bits, args.units[-1])
    data = {"records": records, "machine": machine(), "args": {k.replace("-", "_"): v for k, v in vars(args).items()}}
    write_json("landscape", data)
    update_section("landscape")
    print(section(data))


if __name__ == "__main__":
    main()
