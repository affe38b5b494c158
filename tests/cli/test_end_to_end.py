"""The user path on the shipped DeiT-shaped reference model, from the command line:
fit → validate --ckpt_path → export safetensors and ONNX from that checkpoint → reload / onnxruntime →
landscape --ckpt_path; and a checkpoint that does not match the config is refused."""
import json
import re
import subprocess
from pathlib import Path

import pytest
import torch

from evolq_pl.cli.restore import build
from evolq_pl.export import load_safetensors
from evolq_pl.export.onnx_io import onnx_session
from evolq_pl.quant import snapshot_scales
from tests.cli.test_trainer_cli import ROOT, cli

DEIT = str(ROOT / "configs" / "fmnist" / "deit.yaml")  # the README user path's config
SMALL = ["--data.init_args.calib_size", "200", "--data.init_args.eval_size", "2000",
         "--model.init_args.search.passes", "1"]


def readme_user_path(run_dir: Path) -> list[str]:
    """The README's user-path commands, with ``runs/deit_w4`` moved to ``run_dir``."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index("<!-- user-path:start -->"):text.index("<!-- user-path:end -->")]
    lines = [line for line in block.splitlines() if line and not line.startswith(("<!--", "```"))]
    return [line.replace("runs/deit_w4", str(run_dir)) for line in lines]


def shell(line: str) -> subprocess.CompletedProcess:
    return subprocess.run(line, shell=True, cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def searched(tmp_path_factory, fashion_mnist_available):
    """The README's ``fit`` line, with small settings."""
    if not fashion_mnist_available:
        pytest.skip("dataset-fashion-mnist not installed (.ci/run installs it)")
    run_dir = tmp_path_factory.mktemp("demo")
    fit = readme_user_path(run_dir)[0]
    assert fit.startswith("evolq-pl fit ")
    out = shell(f"{fit} {' '.join(SMALL)}")
    assert out.returncode == 0, out.stderr[-3000:]
    (run_dir / "fit.out").write_text(out.stdout + out.stderr)
    return run_dir, run_dir / "checkpoints" / "last.ckpt", json.loads((run_dir / "results.json").read_text())


def test_fit_prints_what_matters_and_logs_every_step(searched):
    run_dir, _, results = searched
    printed = (run_dir / "fit.out").read_text()
    for noise in ("💡 tip", "total flops", "modules in train mode", "iterabledataset", "log_every_n_steps",
                  "gpu available", "sanity checking"):  # Lightning's own spelling varies: compared in lower case
        assert noise not in printed.lower(), noise
    assert "calibrated init: fitness" in printed and "phases: setup" in printed
    rows = (next(run_dir.rglob("metrics.csv"))).read_text().splitlines()
    fitness = rows[0].split(",").index("search/fitness")
    steps = [r.split(",") for r in rows[1:] if r.split(",")[fitness]]
    assert len(steps) == results["evaluations"] // 3  # one row per search step (K = 3 evaluations each)
    gain = rows[0].split(",").index("search/gain")  # what the progress bar shows: the digits that move
    assert float(steps[-1][gain]) == pytest.approx(results["fitness_init"] - results["fitness_final"], rel=1e-5)


def test_readme_user_path_validate_export_reload_onnxruntime(searched, tmp_path):
    run_dir, ckpt, results = searched
    assert results["evaluations"] == 6 * 3 and results["settings"]["quant"]["w_bits"] == 4
    validate, export_st, export_onnx, run_onnx = readme_user_path(run_dir)[1:]
    val = shell(f"{validate} --run_dir {tmp_path / 'val'} {' '.join(SMALL)}")
    assert val.returncode == 0, val.stderr[-3000:]
    top1 = float(re.search(r"val/top1\D*([0-9.]+)", val.stdout).group(1))
    assert top1 == pytest.approx(results["top1_evolq"], abs=1e-3)  # in percent, as fit gives it
    for line in (export_st, export_onnx):
        out = shell(f"{line} -- {' '.join(SMALL)}")
        assert out.returncode == 0, out.stderr[-3000:]
        # (issue 27, 5) no warning the project expects (LightningCLI's ``args``), no tracer or hardware noise
        for noise in ("args parameter is intended", "tracerwarning", "gpu available", "userwarning"):
            assert noise not in (out.stdout + out.stderr).lower(), (noise, out.stderr[-2000:])
    ran = shell(run_onnx)
    assert ran.returncode == 0 and ran.stdout.strip() == "(2, 10)", ran.stderr[-2000:]
    assert "mergeshapeinfo" not in ran.stderr.lower(), ran.stderr[-2000:]

    module, dm = build([DEIT], SMALL, str(ckpt))  # the searched module, restored as the commands restore it
    x = torch.cat([b for b, _ in dm.eval_dataloader()])[:2000]
    with torch.no_grad():
        searched_logits = module.model(x)
        assert torch.equal(load_safetensors(run_dir / "deit_w4.safetensors")(x), searched_logits)
    init = module.search_run.init_scales
    current = snapshot_scales(module.model)
    assert init is not None and any(not torch.equal(init[k], current[k]) for k in init), \
        "the checkpoint's searched scales equal the calibrated init: nothing was searched"

    sess = onnx_session(run_dir / "deit_w4.onnx")
    ort_logits = torch.cat([torch.from_numpy(sess.run(None, {"images": b.numpy()})[0]) for b in x.split(500)])
    agreement = (ort_logits.argmax(1) == searched_logits.argmax(1)).float().mean().item()
    assert agreement >= 0.995, agreement


def test_landscape_from_checkpoint(searched, tmp_path):
    _, ckpt, _ = searched
    out = cli("landscape", "--config", DEIT, "--ckpt_path", str(ckpt), "--unit", "5", "--steps", "3",
              "--eval_size", "200", "--out", str(tmp_path / "land"), "--", *SMALL)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "args parameter is intended" not in out.stderr and "warning" not in out.stderr.lower(), out.stderr[-2000:]
    rows = (tmp_path / "land" / "landscape.csv").read_text().splitlines()
    assert len(rows) == 1 + 3


def test_checkpoint_that_does_not_match_is_refused(searched, tmp_path):
    _, ckpt, _ = searched
    val = cli("validate", "--config", DEIT, "--run_dir", str(tmp_path), "--ckpt_path", str(ckpt), *SMALL,
              "--model.init_args.quant.w_bits", "3")
    assert val.returncode == 2 and "quant.w_bits: checkpoint=4, config=3" in val.stderr, val.stderr[-2000:]
    assert "Traceback" not in val.stderr
    levit = cli("validate", "--config", str(ROOT / "configs" / "fmnist" / "levit.yaml"), "--run_dir", str(tmp_path),
                "--ckpt_path", str(ckpt))
    assert levit.returncode == 2 and "model_name: checkpoint='deit_tiny_patch16_224', config='levit_128s'" in levit.stderr
    # resuming a search needs the same search; validating / exporting its result does not (another seed's config)
    resume = cli("fit", "--config", DEIT, "--run_dir", str(tmp_path / "r"), "--ckpt_path", str(ckpt), *SMALL,
                 "--model.init_args.search.loss", "mse")
    assert resume.returncode == 2 and "loss: checkpoint='infonce', config='mse'" in resume.stderr, resume.stderr[-2000:]
    other_seed = cli("validate", "--config", DEIT, "--run_dir", str(tmp_path / "v"), "--ckpt_path", str(ckpt), *SMALL,
                     "--model.init_args.search.seed", "1")
    assert other_seed.returncode == 0, other_seed.stderr[-2000:]


def test_resuming_a_finished_run_still_writes_its_results(searched, tmp_path):
    run_dir, ckpt, results = searched
    again = cli("fit", "--config", DEIT, "--run_dir", str(tmp_path), "--ckpt_path", str(ckpt), *SMALL)
    assert again.returncode == 0, again.stderr[-2000:]
    resumed = json.loads((tmp_path / "results.json").read_text())
    assert resumed["evaluations"] == results["evaluations"] and resumed["top1_evolq"] == results["top1_evolq"]


def test_safetensors_export_from_a_checkpoint_reads_no_images(searched, tmp_path):
    """(issue 24) The searched scales and the float weights come from the checkpoint and the config: with a data
    folder that holds no images the export still succeeds, and gives the file an export with the data gives."""
    _, ckpt, _ = searched
    (tmp_path / "no_images").mkdir()
    files = {}
    for name, data in (("with_data", []), ("no_images", ["--data.init_args.root", str(tmp_path / "no_images")])):
        files[name] = tmp_path / f"{name}.safetensors"
        out = cli("export", "--config", DEIT, "--ckpt_path", str(ckpt), "--format", "safetensors",
                  "--output", str(files[name]), *SMALL, *data)
        assert out.returncode == 0, out.stderr[-2000:]
    assert list((tmp_path / "no_images").iterdir()) == []  # nothing read: not even the Debian files staged there
    # the same content: safetensors orders the metadata as a Rust hash map does, differently in each process
    from safetensors.torch import load_file, safe_open
    tensors = {name: load_file(path) for name, path in files.items()}
    meta = {name: safe_open(path, "pt").metadata() for name, path in files.items()}
    assert meta["no_images"] == meta["with_data"] and meta["with_data"]["content_sha256"]
    assert tensors["no_images"].keys() == tensors["with_data"].keys()
    assert all(torch.equal(t, tensors["with_data"][k]) for k, t in tensors["no_images"].items())
