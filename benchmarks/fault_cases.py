"""The fault cases of the run-folder / resume / write / seeds audit, rerun from the command line as a user would:
each case's exit status, first error line, and whether a traceback was printed or a result lost.

    python -m benchmarks.fault_cases          # ~10 min on 2 CPU cores; writes benchmarks/results/fault_cases.json

Every case uses the shipped DeiT-shaped Fashion-MNIST config with small settings (D below) in a fresh folder.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from benchmarks.common import RESULTS
from benchmarks.synthetic import make_imagefolder

D = ["--config", "fmnist/deit", "--model.init_args.search.passes", "1", "--model.init_args.search.population", "4",
     "--model.init_args.search.tournament", "2", "--model.init_args.search.cycles", "1",
     "--data.init_args.calib_size", "100", "--data.init_args.eval_size", "200", "--trainer.enable_progress_bar",
     "false"]
CLI = [sys.executable, "-m", "evolq_pl"]


def sh(argv: list[str], cwd: Path, shell_prefix: str = "", env: dict | None = None) -> subprocess.CompletedProcess:
    if shell_prefix:  # e.g. a ulimit for this command only
        cmd = f"{shell_prefix}; exec {' '.join(_quote(a) for a in argv)}"
        return subprocess.run(["bash", "-c", cmd], cwd=cwd, capture_output=True, text=True, env=env)
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=env)


def _quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\\''") + "'"


def first_error(out: subprocess.CompletedProcess) -> str:
    lines = [line for line in out.stderr.splitlines() if line.startswith(("error:", "Traceback"))]
    return lines[0] if lines else (out.stderr.strip().splitlines() or [""])[-1]


def sha(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12] if path.exists() else None


def cases(tmp: Path) -> dict[str, Callable[[], dict]]:
    run = tmp / "run"

    def fit_twice() -> dict:
        first = sh([*CLI, "fit", *D, "--run_dir", str(run)], tmp)
        before = sha(run / "results.json")
        second = sh([*CLI, "fit", *D, "--run_dir", str(run), "--model.init_args.search.seed", "1"], tmp)
        return {"out": second, "ok": first.returncode == 0 and second.returncode == 2
                and sha(run / "results.json") == before and not list(run.rglob("last-v1.ckpt"))}

    def resume_other_data() -> dict:
        part = tmp / "part"
        sh([*CLI, "fit", *D, "--run_dir", str(part), "--trainer.max_steps", "2", "--model.init_args.evaluate_at_end",
            "false"], tmp)
        out = sh([*CLI, "fit", *D, "--run_dir", str(part), "--ckpt_path", str(part / "checkpoints" / "last.ckpt"),
                  "--data.init_args.calib_size", "200"], tmp)
        return {"out": out, "ok": out.returncode == 2 and "calibration" in first_error(out)}

    def export_full_disk(fmt: str) -> Callable[[], dict]:
        def case() -> dict:
            target = tmp / f"existing.{fmt}"
            target.write_bytes(b"old model " * 10_000)
            before = sha(target)
            out = sh([*CLI, "export", *D, "--ckpt_path", str(run / "checkpoints" / "last.ckpt"), "--format", fmt,
                      "--output", str(target), "--overwrite"], tmp, shell_prefix="ulimit -f 64")
            debris = [p.name for p in tmp.glob(".existing*")]
            return {"out": out, "ok": out.returncode == 2 and sha(target) == before and not debris}
        return case

    def seeds_damaged() -> dict:
        out_dir = tmp / "seeds"
        (out_dir / "seed0").mkdir(parents=True)
        (out_dir / "seed0" / "results.json").write_text('{"top1')
        out = sh([*CLI, "seeds", *D, "--seeds", "0", "--out", str(out_dir), "--summary_only"], tmp)
        return {"out": out, "ok": out.returncode == 2 and "results.json" in first_error(out)}

    def seeds_sigterm() -> dict:
        out_dir = tmp / "seeds_term"
        proc = subprocess.Popen([*CLI, "seeds", *D, "--seeds", "0", "--out", str(out_dir)], cwd=tmp,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(25)  # the child fit is running
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
        out = subprocess.CompletedProcess(proc.args, proc.returncode, "", err)
        alive = subprocess.run(["pgrep", "-f", "--", f"--run_dir {out_dir}"], capture_output=True).returncode == 0
        return {"out": out, "ok": proc.returncode == 143 and not alive}

    def one_line(extra: list[str], command: str = "fit") -> Callable[[], dict]:
        def case() -> dict:
            started = time.perf_counter()
            out = sh([*CLI, command, *D, *extra], tmp)
            return {"out": out, "ok": out.returncode == 2, "seconds": round(time.perf_counter() - started, 1)}
        return case

    def corrupt_val_image() -> dict:
        folder = tmp / "imgs"
        make_imagefolder(folder, train=40, val=20, classes=2, size=48)
        next((folder / "val").rglob("*.jpg")).write_bytes(b"not an image")
        run_dir = tmp / "corrupt"
        out = sh([*CLI, "fit", "--config", "imagenet/base", "--config", "imagenet/deit_tiny_w4a8",
                  "--model.init_args.pretrained", "false", "--model.init_args.model_kwargs",
                  "{depth: 2, embed_dim: 48, num_heads: 2, num_classes: 2}", "--model.init_args.search.passes", "1",
                  "--model.init_args.search.population", "4", "--model.init_args.search.tournament", "2",
                  "--model.init_args.search.cycles", "1", "--data.init_args.root", str(folder),
                  "--data.init_args.calib_size", "20", "--data.init_args.calib_batch_size", "10",
                  "--data.init_args.num_workers", "0", "--run_dir", str(run_dir)], tmp)
        results = json.loads((run_dir / "results.json").read_text()) if (run_dir / "results.json").exists() else {}
        return {"out": out, "ok": out.returncode == 2 and "missing" in results}

    def payload_last() -> dict:
        import torch

        class Payload:
            def __reduce__(self):
                return (open, (str(tmp / "payload_ran"), "w"))
        (tmp / "evil" / "checkpoints").mkdir(parents=True)
        torch.save({"state_dict": {}, "x": Payload()}, tmp / "evil" / "checkpoints" / "last.ckpt")
        out = sh([*CLI, "validate", *D, "--run_dir", str(tmp / "evil"), "--ckpt_path", "last"], tmp)
        return {"out": out, "ok": out.returncode == 2 and not (tmp / "payload_ran").exists()}

    def damaged_cache() -> dict:
        cache = tmp / "cache"
        sh([sys.executable, "-c", "from evolq_pl.lightning.fashion_mnist import load_fashion_mnist as f; f()"], tmp,
           env={**os.environ, "EVOLQ_DATA": str(cache)})
        victim = next(cache.rglob("t10k-labels*"))
        victim.write_bytes(victim.read_bytes()[:100])
        out = sh([*CLI, "validate", *D], tmp, env={**os.environ, "EVOLQ_DATA": str(cache)})
        return {"out": out, "ok": out.returncode == 0 and "damaged" in out.stderr}

    def api(code: str) -> Callable[[], dict]:
        def case() -> dict:
            out = sh([sys.executable, "-c", code], tmp)
            last = (out.stderr.strip().splitlines() or [""])[-1]
            return {"out": subprocess.CompletedProcess(out.args, out.returncode, "", last), "ok": out.returncode == 1,
                    "first_line": last}
        return case

    nan_images = ("import torch; from evolq_pl.report.metrics import evaluate; m = torch.nn.Flatten(); "
                  "x = torch.zeros(4, 10); x[0, 0] = float('nan'); evaluate(m, [(x, torch.zeros(4).long())], 10)")
    return {
        "1 fit into a finished --run_dir": fit_twice,
        "2 resume with other calibration data": resume_other_data,
        "3 export onnx over an existing file, ulimit -f 64": export_full_disk("onnx"),
        "3 export safetensors over an existing file, ulimit -f 64": export_full_disk("safetensors"),
        "4 seeds --summary_only on a damaged seed0/results.json": seeds_damaged,
        "4 SIGTERM to seeds while its fit runs": seeds_sigterm,
        "5 --data.init_args.eval_size -5": one_line(["--data.init_args.eval_size", "-5"]),
        "5 landscape --unit 99 (before calibration)": one_line(["--unit", "99", "--out", str(tmp / "land")],
                                                             "landscape"),
        "6 model_kwargs timm rejects": one_line(["--model.init_args.model_kwargs",
                                                 "{img_size: 28, patch_size: 4, in_chans: 1, num_classes: 10, "
                                                 "embed_dim: 65, depth: 6, num_heads: 4}"]),
        "6 corrupt validation image met after the search": corrupt_val_image,
        "6 --ckpt_path last naming a pickle payload": payload_last,
        "7 evaluate() on NaN images (library)": api(nan_images),
        "8 damaged Fashion-MNIST cache file": damaged_cache,
    }


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name, case in cases(Path(d)).items():
            result = case()
            out = result["out"]
            row = {"case": name, "exit": out.returncode, "first_line": result.get("first_line", first_error(out)),
                   "traceback": "Traceback" in out.stderr, "as_expected": result["ok"]}
            rows.append(row)
            print(f"{row['exit']:>4}  {'ok ' if row['as_expected'] else 'BAD'}  {name}: {row['first_line'][:150]}",
                  flush=True)
    (RESULTS / "fault_cases.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(f"{sum(r['traceback'] for r in rows)} tracebacks, {sum(not r['as_expected'] for r in rows)} cases not as "
          f"expected, of {len(rows)}")


if __name__ == "__main__":
    main()
