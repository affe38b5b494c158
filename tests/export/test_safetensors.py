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


@pytest.mark.parametrize("kind, bits", [("deit", 4), ("levit", 3), ("deit", 8), ("swin", 4)])
def test_round_trip_identical_logits(tmp_path, kind, bits):
    model, batches = tiny_model(kind, w_bits=bits)
    name, kw, _ = TINY[kind]
    path = export_safetensors(model, tmp_path / "m.safetensors", name, kw)
    rebuilt = load_safetensors(path)
    with torch.no_grad():
        assert torch.equal(model(batches[0]), rebuilt(batches[0]))


def test_a_rebuilt_model_exports_again_to_the_same_logits(tmp_path):
    """A re-export stores the rebuilt layers' own bias-correction statistics (not those of their stand-in float
    weights): rebuilding it again gives the original logits."""
    model, batches = tiny_model("deit")
    name, kw, _ = TINY["deit"]
    rebuilt = load_safetensors(export_safetensors(model, tmp_path / "a.safetensors", name, kw))
    again = load_safetensors(export_safetensors(rebuilt, tmp_path / "b.safetensors", name, kw))
    with torch.no_grad():
        assert torch.equal(model(batches[0]), again(batches[0]))


def test_a_rebuilt_layer_multiplies_by_its_stored_weight(tmp_path):
    """The float weights are not in the file: a rebuilt weight layer takes the stored dequantized, bias-corrected
    weight (the original's, bit for bit), keeps it out of its state dict, moves it with the model and pickles."""
    import io

    from evolq_pl.export.safetensors_io import FrozenQConv2d, FrozenQLinear
    model, batches = tiny_model("deit", w_bits=4)
    name, kw, _ = TINY["deit"]
    rebuilt = load_safetensors(export_safetensors(model, tmp_path / "m.safetensors", name, kw))
    lin, conv = rebuilt.blocks[0].attn.qkv, rebuilt.patch_embed.proj
    assert type(lin) is FrozenQLinear and type(conv) is FrozenQConv2d
    with torch.no_grad():
        assert torch.equal(lin.quantized_weight(), model.blocks[0].attn.qkv.quantized_weight())
        assert not torch.equal(lin.quantized_weight(), lin._compute_weight())  # not from the stand-in weights
    assert set(rebuilt.state_dict()) == set(model.state_dict())
    moved = rebuilt.to(torch.float64).blocks[0].attn.qkv
    assert moved.frozen_weight.dtype == moved.bias_target()[1].dtype == torch.float64  # its statistics move too
    buf = io.BytesIO()
    torch.save(rebuilt.float(), buf)
    again = torch.load(io.BytesIO(buf.getvalue()), weights_only=False)
    with torch.no_grad():
        assert torch.equal(again(batches[0]), model(batches[0]))


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
    args = [sys.executable, "cli.py", "export", "--config", "configs/fmnist/deit.yaml", "--format", "safetensors",
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


def _rewrite(src, dst, meta_change=None, tensor_change=None):
    """Copy an export with edited metadata / tensors (the content hash is kept as written at export)."""
    from safetensors import safe_open
    from safetensors.torch import save_file
    with safe_open(str(src), framework="pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    (meta_change or (lambda m: None))(meta)
    (tensor_change or (lambda t: None))(tensors)
    save_file(tensors, str(dst), metadata=meta)
    return dst


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model, _ = tiny_model("deit", w_bits=4)
    name, kw, _ = TINY["deit"]
    return export_safetensors(model, tmp_path_factory.mktemp("exp") / "m.safetensors", name, kw)


def test_load_refuses_damaged_or_edited_files(tmp_path, exported):
    import json
    data = bytearray(exported.read_bytes())
    data[-5] ^= 0x01  # one bit of the last tensor's bytes
    flipped = tmp_path / "flipped.safetensors"
    flipped.write_bytes(bytes(data))
    with pytest.raises(ExportError, match="content hash does not match"):
        load_safetensors(flipped)

    def nan_scale(t):
        key = next(k for k in t if k.endswith(".scale") and t[k].numel() > 0)
        t[key] = t[key].clone()
        t[key][0] = float("nan")
    with pytest.raises(ExportError, match=r"\.scale holds NaN or infinite values"):
        load_safetensors(_rewrite(exported, tmp_path / "nan.safetensors", tensor_change=nan_scale))

    def other_bits(m):
        cfg = json.loads(m["quant_config"])
        cfg["a_bits"] = 4
        m["quant_config"] = json.dumps(cfg)
    with pytest.raises(ExportError, match="content hash does not match"):
        load_safetensors(_rewrite(exported, tmp_path / "bits.safetensors", meta_change=other_bits))


def test_load_refuses_bad_metadata_before_allocating(tmp_path, exported):
    import json

    def big(m):  # a 24-layer, 1024-wide model: refused from shapes, built on the meta device only
        m["model_kwargs"] = json.dumps({**json.loads(m["model_kwargs"]), "depth": 24, "embed_dim": 1024, "num_heads": 16})
    with pytest.raises(ExportError, match=r"does not hold the tensors of the model in its metadata .* missing \["):
        load_safetensors(_rewrite(exported, tmp_path / "big.safetensors", meta_change=big))

    def wide(m):  # the same tensor names, other sizes
        m["model_kwargs"] = json.dumps({**json.loads(m["model_kwargs"]), "embed_dim": 64})
    with pytest.raises(ExportError, match=r"has shape \[.*\], the model in its metadata .* needs"):
        load_safetensors(_rewrite(exported, tmp_path / "wide.safetensors", meta_change=wide))

    def dropped(t):  # a tensor left out: refused before the real model is built
        del t[next(k for k in t if k.endswith(".qweight"))]
    with pytest.raises(ExportError, match=r"missing \['.*\.qweight'\]"):
        load_safetensors(_rewrite(exported, tmp_path / "dropped.safetensors", tensor_change=dropped))
    for field, value, message in (("model_kwargs", "{not json", "'model_kwargs' is missing or not JSON"),
                                  ("weights", "[1, 2]", "'weights' is a list, expected an object"),
                                  ("model_name", "resnet50", "does not describe a supported model"),
                                  ("quant_config", json.dumps({"w_bits": 1}), "does not describe a supported model"),
                                  ("format", "other/1", "is not an evolq_pl/2 export"),
                                  ("model_kwargs", json.dumps({"checkpoint_path": "/etc/hostname"}),
                                   r"may only hold model sizes, not \['checkpoint_path'\]")):
        bad = _rewrite(exported, tmp_path / f"{field}.safetensors", meta_change=lambda m: m.update({field: value}))
        with pytest.raises(ExportError, match=message):
            load_safetensors(bad)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(ExportError, match="is not a readable safetensors file"):
        load_safetensors(garbage)


@pytest.mark.parametrize("existing", [b"old export", None])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_partial_one(tmp_path, existing):
    """``ulimit -f``: the export does not fit; an existing file stays as it was, a new path stays free (a rerun
    is not refused as existing), and the error is one line naming the file."""
    from evolq_pl.io import WriteError
    from tests.test_io import file_size_limit
    model, _ = tiny_model("deit", w_bits=4)
    name, kw, _ = TINY["deit"]
    target = tmp_path / "m.safetensors"
    if existing is not None:
        target.write_bytes(existing)
    with file_size_limit(4096), pytest.raises(WriteError, match=f"cannot write {target}: File too large"):
        export_safetensors(model, target, name, kw, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ([target.name] if existing else [])
    assert existing is None or target.read_bytes() == existing
    assert load_safetensors(export_safetensors(model, target, name, kw, overwrite=existing is not None))


def _rehashed(src, dst, tensor_change):
    """An edited copy whose content hash is recomputed (the hash is a checksum: this is what a tamperer does)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from evolq_pl.export.safetensors_io import content_hash
    with safe_open(str(src), framework="pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k).clone() for k in f.keys()}
    tensor_change(tensors)
    meta["content_sha256"] = content_hash(tensors, meta)
    save_file(tensors, str(dst), metadata=meta)
    return dst


def _set(key_end, value):
    """Set the first element of the first tensor whose name ends with ``key_end``."""
    def edit(t):
        t[next(k for k in t if k.endswith(key_end))][0] = value
    return edit


@pytest.mark.parametrize("key_end, value, message", [
    (".weight_quantizer.scale", 0.0, r"tensor \S+\.weight_quantizer\.scale holds the scale 0; every scale must be "
                                     r"finite and > 0"),
    ("qact1.scale", -0.05, r"tensor \S+qact1\.scale holds the scale -0\.05; every scale must be finite and > 0"),
    (".qzero", 16, r"tensor \S+\.qzero holds the zero point 16; the quantizer's grid allows only integers 0\.\.15"),
    ("qact1.zero_point", 3.5, r"tensor \S+qact1\.zero_point holds the zero point 3\.5; .* only integers 0\.\.255"),
    ("qact1.zero_point", -1.0, r"tensor \S+qact1\.zero_point holds the zero point -1; .* only integers 0\.\.255"),
    ("qact1.zero_point", 256.0, r"tensor \S+qact1\.zero_point holds the zero point 256; .* integers 0\.\.255"),
])
def test_load_refuses_values_off_the_grid_even_with_a_recomputed_hash(tmp_path, exported, key_end, value, message):
    bad = _rehashed(exported, tmp_path / "bad.safetensors", _set(key_end, value))
    with pytest.raises(ExportError, match=f"^{bad}: {message}"):
        load_safetensors(bad)


def test_load_refuses_weight_codes_off_the_grid_and_edited_weight_metadata(tmp_path):
    import json

    from safetensors import safe_open
    model, _ = tiny_model("deit", w_bits=3)  # 3-bit codes 0..7 packed in nibbles: 8..15 fit the file, not the grid
    name, kw, _ = TINY["deit"]
    src = export_safetensors(model, tmp_path / "m.safetensors", name, kw)
    bad = _rehashed(src, tmp_path / "codes.safetensors", _set(".qweight", 0xF0))
    with pytest.raises(ExportError, match=r"tensor \S+\.qweight holds the code 15; .* only integers 0\.\.7"):
        load_safetensors(bad)
    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
    weights = json.loads(meta["weights"])
    layer = next(iter(weights))
    weights[layer]["bits"] = 4
    edited = _rewrite(src, tmp_path / "meta.safetensors", meta_change=lambda m: m.update(weights=json.dumps(weights)))
    relabelled = _rehashed(edited, tmp_path / "meta2.safetensors", lambda t: None)
    with pytest.raises(ExportError, match=rf"metadata weights\['{layer}'\] is .*'bits': 4.*needs .*'bits': 3"):
        load_safetensors(relabelled)


@pytest.mark.parametrize("bias_correction", [False, True])
def test_zero_points_are_read(tmp_path, bias_correction):
    """Weight zero points give ŵ = (q − z)·s; bias correction then restores each channel's stored mean, which
    cancels a per-channel offset: with it the quantized logits do not depend on them, the float stand-in
    weights (quantization off) do. Activation zero points always change the logits (module docstring)."""
    from evolq_pl import QuantConfig, calibrate, create_quant_model, quant_disabled
    from evolq_pl.models.random_weights import randomize_
    name, kw, size = TINY["deit"]
    model = randomize_(create_quant_model(name, QuantConfig(w_bits=4, bias_correction=bias_correction), **kw), 0)
    x = torch.randn(16, 1, size, size, generator=torch.Generator().manual_seed(0))
    calibrate(model, [x])
    src = export_safetensors(model, tmp_path / "m.safetensors", name, kw)

    def shift_weight_zero_points(t):
        for k in [k for k in t if k.endswith(".qzero")]:
            t[k] = torch.where(t[k] < 15, t[k] + 1, t[k] - 1).to(torch.uint8)

    def shift_activation_zero_point(t):
        key = next(k for k in t if k.endswith("qact1.zero_point"))
        t[key] = t[key] + (1 if t[key][0] < 255 else -1)

    base = load_safetensors(src)
    weights_z = load_safetensors(_rehashed(src, tmp_path / "wz.safetensors", shift_weight_zero_points))
    acts_z = load_safetensors(_rehashed(src, tmp_path / "az.safetensors", shift_activation_zero_point))
    with torch.no_grad():
        logits = base(x)
        assert torch.equal(logits, weights_z(x)) == bias_correction
        assert not torch.equal(logits, acts_z(x))
        with quant_disabled(base), quant_disabled(weights_z):
            assert not torch.equal(base(x), weights_z(x))  # the stand-in weights (q − z)·s
