"""What search checkpoints cost, from the command a user types (issue 24).

    python -m benchmarks.checkpoint_cost            # ~15 minutes on 2 CPU cores

Two models, each searched by ``evolq-pl fit`` twice with the shipped configs (``SearchCheckpoint``: last.ckpt
after every step), once with lean checkpoints (the default) and once self-contained
(``checkpoint_weights: full``):

* ``demo``: ``configs/demo.yaml`` as shipped (the LeViT-shaped Fashion-MNIST model, W3A8, paper search);
* ``deit_small``: ``configs/imagenet/base.yaml`` + ``deit_small_w4a8.yaml``, DeiT-S float weights from a local
  checkpoint file (realistic random weights), a synthetic image folder; reduced so that it runs on a CPU in
  minutes: 100 calibration images, one pass (12 steps), eager (``compile_backend: null``).

Per run: ``bytes_per_step`` (the size of the checkpoint written at each step) and ``checkpoint_share`` =
seconds writing checkpoints / seconds searching (results.json's ``phase_seconds``), side by side in one run.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import benchmark_parser, machine, machine_line, record, table
from benchmarks.synthetic import fit_cli, float_checkpoint, make_imagefolder

DEIT_S = ["--config", "configs/imagenet/base.yaml", "--config", "configs/imagenet/deit_small_w4a8.yaml",
          "--model.init_args.pretrained", "false", "--data.init_args.calib_size", "100",
          "--data.init_args.num_workers", "2", "--model.init_args.search.passes", "1",
          "--model.init_args.search.compile_backend", "null"]


def measure(args: list[str], run_dir: Path) -> dict[str, Any]:
    out = fit_cli(args, run_dir)
    if out["returncode"] != 0:
        raise RuntimeError(f"{out['command']} failed:\n{out['error_tail']}")
    phases = out["results"]["phase_seconds"]
    return {"command": out["command"], "wall_seconds": out["wall_seconds"], "bytes_per_step": out["checkpoint_bytes"],
            "files": out["checkpoint_files"],
            "checkpoint_seconds": phases["checkpoints"], "search_seconds": phases["search"],
            "checkpoint_share": phases["checkpoints"] / phases["search"], "phase_seconds": phases,
            "fitness_final": out["results"]["fitness_final"]}


def main() -> None:
    args = benchmark_parser(__doc__).parse_args()
    work = Path(tempfile.mkdtemp(prefix="evolq_ckpt_cost_"))
    try:
        make_imagefolder(work / "data", 200, 50)
        float_checkpoint(work / "deit_s.pt", "deit_small_patch16_224")
        deit = [*DEIT_S, "--data.init_args.root", str(work / "data"),
                "--model.init_args.checkpoint_path", str(work / "deit_s.pt")]
        models = {"demo": ["--config", "configs/demo.yaml"], "deit_small": deit}
        data: dict[str, Any] = {"machine": machine(), "models": {}}
        for name, base in models.items():
            data["models"][name] = {
                weights: measure([*base, "--model.init_args.checkpoint_weights", weights], work / f"{name}_{weights}")
                for weights in ("lean", "full")}
            print(f"[checkpoint_cost] {name}: " + ", ".join(
                f"{w} {r['bytes_per_step']} B/step, share {r['checkpoint_share']:.4f}"
                for w, r in data["models"][name].items()), flush=True)
            record("checkpoint_cost", data, args)  # after each model: a later failure loses nothing measured
    finally:
        shutil.rmtree(work, ignore_errors=True)


def section(data: dict[str, Any], before: dict[str, Any] | None = None) -> str:
    rows = [[name, weights, f"{r['bytes_per_step']:,}", ", ".join(r["files"]), f"{r['checkpoint_seconds']:.2f}",
             f"{r['search_seconds']:.1f}", f"{r['checkpoint_share']:.4f}",
             "yes" if r["fitness_final"] == runs["lean"]["fitness_final"] else "no"]
            for name, runs in data["models"].items() for weights, r in runs.items()]
    return ("## Checkpoint cost\n\n`python -m benchmarks.checkpoint_cost` — each model searched by `evolq-pl fit` "
            "with the shipped configs (last.ckpt after every search step), lean checkpoints (default) against "
            "self-contained ones (`checkpoint_weights: full`), side by side; DeiT-S reduced to 100 calibration "
            "images, one pass, eager, float weights from a local file. share = seconds writing checkpoints / "
            f"seconds in the search phase (results.json `phase_seconds`). {machine_line(data['machine'])}\n\n"
            + table(["model", "checkpoints", "bytes per step", "files", "checkpoint s", "search s", "share",
                     "same final fitness as lean"], rows) + "\n")


if __name__ == "__main__":
    main()
