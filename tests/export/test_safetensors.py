"""safetensors export: packing by hand, identical logits after reload, bad input, W4 size."""
import pytest
import torch

from evolq_pl.export import ExportError, export_safetensors, load_safetensors
from evolq_pl.export.safetensors_io import pack, unpack
from tests.search.helpers import TINY, tiny_model


def test_pack_by_hand():
    codes = torch.tensor([1, 2, 15, 0, 7])
    packed = pack(codes, 4)
    assert packed.tolist() == [1 | 2 << 4, 15 | 0 << 4, 7]
    assert unpack(packed, 4, 5).tolist() == codes.tolist()
    assert unpack(pack(torch.tensor([200, 3]), 8), 8, 2).tolist() == [200, 3]


@pytest.mark.parametrize("kind, bits", [("deit", 4), ("levit", 3), ("deit", 8)])
def test_round_trip_identical_logits(tmp_path, kind, bits):
    model, batches = tiny_model(kind, w_bits=bits)
    name, kw, _ = TINY[kind]
    path = export_safetensors(model, tmp_path / "m.safetensors", name, kw)
    rebuilt = load_safetensors(path)
    with torch.no_grad():
        assert torch.equal(model(batches[0]), rebuilt(batches[0]))


def test_bad_input(tmp_path):
    from evolq_pl import create_quant_model
    name, kw, _ = TINY["deit"]
    with pytest.raises(ExportError, match="not calibrated"):
        export_safetensors(create_quant_model(name, **kw), tmp_path / "x.safetensors", name, kw)
    model, _ = tiny_model("deit")
    target = tmp_path / "y.safetensors"
    target.write_bytes(b"keep me")
    with pytest.raises(ExportError, match="exists; pass overwrite=True"):
        export_safetensors(model, target, name, kw)
    assert target.read_bytes() == b"keep me"


def test_export_cli_and_w4_size(tmp_path, fashion_mnist_available):
    import subprocess
    import sys
    from pathlib import Path

    from evolq_pl.models.reference import reference_model
    if not fashion_mnist_available:
        pytest.skip("dataset-fashion-mnist not installed (.ci/run installs it)")
    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "deit_w4.safetensors"
    args = [sys.executable, "cli.py", "export", "--config", "configs/demo.yaml", "--format", "safetensors",
            "--output", str(out), "--", "--data.init_args.calib_size", "200"]
    run = subprocess.run(args, cwd=root, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    float_size = Path(reference_model("deit_fmnist")["path"]).stat().st_size
    # 64-wide rows: per-channel scale / zero point / bias-correction statistics weigh more than the packed
    # weights themselves, so the small reference model only reaches ~1/4.7 (BENCHMARKS.md)
    assert out.stat().st_size <= float_size / 4
    again = subprocess.run(args, cwd=root, capture_output=True, text=True, timeout=300)
    assert again.returncode != 0 and "exists; pass --overwrite" in again.stderr


def test_w4_file_at_most_one_sixth_of_float_at_real_width(tmp_path):
    import io
    from evolq_pl import calibrate, create_quant_model
    from evolq_pl.models.factory import create_float_model
    kw = dict(img_size=32, depth=2)  # DeiT-S width (384), 2 blocks
    buf = io.BytesIO()
    torch.save(create_float_model("deit_small_patch16_224", **kw).state_dict(), buf)
    model = create_quant_model("deit_small_patch16_224", **kw)
    calibrate(model, [torch.randn(4, 3, 32, 32)])
    path = export_safetensors(model, tmp_path / "s.safetensors", "deit_small_patch16_224", kw)
    assert path.stat().st_size <= len(buf.getvalue()) / 6
