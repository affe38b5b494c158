"""``evolq-pl landscape``: sweep one unit's scales along seeded random directions.

    evolq-pl landscape --config configs/fmnist/deit.yaml --unit 5 --radius 0.05 --steps 21 --dims 1 \
        --out runs/landscape/deit_w4 [--mode absolute] [--ckpt_path C] [--model.init_args.quant.w_bits 3]

``--mode relative`` (default) moves the scales s0·(1 + a·d), ``absolute`` moves them s0 + a·d (the paper's
mutation s + U(−r, r) is absolute: 1e-3 at ≤ 4 bits, 1e-4 at 8).

Writes landscape.csv, landscape.png (line plots for 1-D, contours for 2-D) and roughness.json.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from evolq_pl.cli.argv import command_parser
from evolq_pl.cli.restore import build
from evolq_pl.io import ensure_writable_dir, write_csv_atomic, write_text_atomic
from evolq_pl.report.metrics import evaluate, first_images
from evolq_pl.report.plots import plot_landscape
from evolq_pl.search import FitnessEvaluator
from evolq_pl.search.landscape import SweepSpec, roughness, sweep


@dataclass
class Landscape:
    """A calibrated (or restored) module ready to sweep: its evaluator, calibration labels and a top-1 probe."""

    module: Any
    evaluator: FitnessEvaluator
    labels: list
    top1: Callable[[], float]

    def sweep(self, spec: SweepSpec) -> list[dict[str, float]]:
        spec.validate(len(self.module.search_run.units))
        from tqdm import tqdm
        with tqdm(desc=f"landscape unit {spec.unit}", unit="point", file=sys.stderr) as bar:
            def advance(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)
            return sweep(self.module.search_run.units[spec.unit], self.evaluator, self.labels, spec, self.top1,
                         self.module.search_cfg.temperature, on_point=advance)


def prepare(configs: list[str], ckpt_path: str | None = None, eval_size: int = 2000,
            extra: list[str] | None = None, spec: SweepSpec | None = None) -> Landscape:
    """Build (and restore) the module, then calibrate it; ``spec``, when given, is checked against the model's
    units first: building takes about a second, calibrating minutes on a real model."""
    module, dm = build(configs, extra or [], ckpt_path)
    dm.check_classes(module.num_classes)
    if spec is not None:
        spec.validate(len(module.search_run.units))
    calib = dm.calibration_data()
    module.search_run.ensure_calibrated(calib, module.device)  # a restored checkpoint is calibrated already
    evaluator = FitnessEvaluator(module.model, calib.batches(), module.search_cfg)
    subset = first_images(dm.eval_dataloader(), eval_size)
    top1 = lambda: evaluate(module.model, subset, module.num_classes)["top1"]  # noqa: E731
    return Landscape(module, evaluator, calib.label_batches(), top1)


def run(configs: list[str], spec: SweepSpec, out: Path, ckpt_path: str | None = None, eval_size: int = 2000,
        extra: list[str] | None = None) -> dict[str, Any]:
    ensure_writable_dir(out, "--out")
    spec.validate()  # before the model is built; the unit index once it is built, before calibration
    land = prepare(configs, ckpt_path, eval_size, extra, spec)
    rows = land.sweep(spec)
    module = land.module
    write_csv_atomic(out / "landscape.csv", rows)
    title = f"{module.model_name} W{module.quant_cfg.w_bits}A{module.quant_cfg.a_bits}, unit {spec.unit} " \
            f"({module.search_run.units[spec.unit].name}), {spec.mode} radius {spec.radius:g}"
    plot_landscape(rows, spec.dims, out / "landscape.png", title)
    rough = {m: roughness([r[m] for r in rows]) for m in rows[0] if m not in ("a", "b")} if spec.dims == 1 else {}
    write_text_atomic(out / "roughness.json", json.dumps(rough, indent=2))
    return {"rows": rows, "roughness": rough}


def main(argv: list[str] | None = None) -> None:
    p, argv, extra = command_parser("landscape", __doc__, argv)
    p.add_argument("--ckpt_path")
    p.add_argument("--unit", type=int, required=True, help="unit index in forward order (0 = first block)")
    p.add_argument("--radius", type=float, default=0.05)
    p.add_argument("--steps", type=int, default=21)
    p.add_argument("--dims", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mode", default="relative", help="relative (s0·(1 + a·d)) or absolute (s0 + a·d)")
    p.add_argument("--eval_size", type=int, default=2000)
    p.add_argument("--out", required=True)
    a, extra = p.parse_command(argv, extra)
    spec = SweepSpec(a.unit, a.radius, a.steps, a.dims, a.seed, a.mode)
    result = run(a.config, spec, Path(a.out), a.ckpt_path, a.eval_size, extra)
    for metric, r in result["roughness"].items():
        print(f"{metric:8s} TV/range {r['tv_over_range']:.2f}  local minima {r['local_minima']:.0f}")
    print(f"written: {Path(a.out) / 'landscape.csv'}, {Path(a.out) / 'landscape.png'}")
