"""All nine architectures: fully quantized (tree walk), W8A8 close to float, report, units, bad input."""
import pytest
import torch
import torch.nn.functional as F

from evolq_pl import QuantConfig, calibrate, create_quant_model, quant_disabled, quant_report, search_units
from evolq_pl.errors import EvolQError
from evolq_pl.layers import QLinear
from evolq_pl.models import SUPPORTED_MODELS, UnknownModelError, format_report, quantize_model, unquantized_layers
from evolq_pl.models.factory import create_float_model
from evolq_pl.models.units import quantizer_groups
from evolq_pl.models.vit import QAttention
from evolq_pl.quant import NotCalibratedError, is_calibrated
from evolq_pl.quant.modes import switches
from evolq_pl.models.random_weights import randomize_

# reduced depth / resolution for CPU speed; the width and structure are the real ones
SMALL = {
    "vit_base_patch16_224": dict(img_size=32, depth=1),
    "vit_large_patch16_224": dict(img_size=32, depth=1),
    "deit_tiny_patch16_224": dict(img_size=32, depth=2),
    "deit_small_patch16_224": dict(img_size=32, depth=1),
    "deit_base_patch16_224": dict(img_size=32, depth=1),
    **{name: dict(img_size=64, depth=(1, 1, 1)) for name in SUPPORTED_MODELS if name.startswith("levit")},
    **{name: dict(img_size=56, embed_dim=16, depths=(2, 2), num_heads=(1, 2))
       for name in SUPPORTED_MODELS if name.startswith("swin")},
}


def _quantized_pair(name: str, cfg: QuantConfig, **kw):
    float_model = randomize_(create_float_model(name, **kw))
    q = randomize_(create_float_model(name, **kw))
    from evolq_pl.models import quantize_model
    return float_model, quantize_model(q, cfg)


@pytest.mark.parametrize("name", SUPPORTED_MODELS)
def test_fully_quantized_and_w8a8_close_to_float(name):
    kw = SMALL[name]
    float_model, q = _quantized_pair(name, QuantConfig(w_bits=8), **kw)
    assert unquantized_layers(q) == []
    # the quantized model's forward must never use fused SDPA: every attention is our explicit one
    assert not any(type(m).__name__ == "Attention" for m in q.modules())
    # 32 seeded images in 2 calibration batches: PTF/OMSE search on the last batch needs a few samples
    x = torch.randn(32, 3, kw["img_size"], kw["img_size"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = float_model(x)
        with quant_disabled(q):
            torch.testing.assert_close(q(x), ref, atol=2e-4, rtol=1e-4)  # BN folding only
        calibrate(q, x.split(16))
        out = q(x)
    assert F.cosine_similarity(out, ref).min() >= 0.99
    assert all(p.calibrated for p in quant_report(q))


def test_small_variants_one_channel():
    q = create_quant_model("levit_128s", img_size=64, in_chans=1, num_classes=10)
    randomize_(q)
    calibrate(q, [torch.randn(4, 1, 64, 64)])
    assert q(torch.randn(2, 1, 64, 64)).shape == (2, 10)
    d = create_quant_model("deit_tiny_patch16_224", img_size=32, patch_size=8, in_chans=1, depth=2, num_classes=7)
    calibrate(d, [torch.randn(4, 1, 32, 32)])
    assert d(torch.randn(2, 1, 32, 32)).shape == (2, 7)


def test_report_lists_reference_points_for_deit_block():
    q = create_quant_model("deit_tiny_patch16_224", img_size=32, depth=1)
    rows = {r.name: r for r in quant_report(q)}
    expected = ["qact_input", "patch_embed.proj.weight_quantizer", "patch_embed.qact", "qact_embed", "qact_pos",
                "qact1", "blocks.0.norm1", "blocks.0.qact1", "blocks.0.attn.qkv.weight_quantizer",
                "blocks.0.attn.qact1", "blocks.0.attn.qact_attn1", "blocks.0.attn.softmax.quantizer",
                "blocks.0.attn.qact2", "blocks.0.attn.proj.weight_quantizer", "blocks.0.attn.qact3",
                "blocks.0.qact2", "blocks.0.norm2", "blocks.0.qact3", "blocks.0.mlp.fc1.weight_quantizer",
                "blocks.0.mlp.qact1", "blocks.0.mlp.fc2.weight_quantizer", "blocks.0.mlp.qact2", "blocks.0.qact4",
                "norm", "qact2", "head.weight_quantizer", "act_out"]
    assert sorted(rows) == sorted(expected)
    assert rows["blocks.0.qact4"].kind == "ptf" and rows["blocks.0.qact4"].granularity == "per-channel"
    assert rows["head.weight_quantizer"].bit_type == "uint4" and not rows["qact1"].calibrated
    assert "blocks.0.attn.qkv.weight_quantizer" in format_report(list(rows.values()))
    # ViT-B does not quantize its input image (reference §4.1)
    assert "qact_input" not in {r.name for r in quant_report(create_quant_model("vit_base_patch16_224", img_size=32, depth=1))}


@pytest.mark.parametrize("name, quantized", [("deit_tiny_patch16_224", True), ("vit_base_patch16_224", False),
                                             ("levit_128s", False), ("swin_tiny_patch4_window7_224", True)])
def test_input_quant_decided_once_for_every_entry_point(name, quantized):
    kw = SMALL[name]
    for model in (create_quant_model(name, **kw), quantize_model(create_float_model(name, **kw))):
        assert model.quant_config.input_quant is quantized
        assert ("qact_input" in {r.name for r in quant_report(model)}) is quantized


def test_exclusion_and_lis_options():
    q = create_quant_model("deit_tiny_patch16_224", QuantConfig(exclude=["head"], lis=True), img_size=32, depth=1)
    assert unquantized_layers(q) == ["head"]
    randomize_(q)
    x = torch.randn(4, 3, 32, 32)
    calibrate(q, [x])
    seen = []
    q.blocks[0].attn.softmax.register_forward_hook(lambda mod, args, out: seen.append(out))
    assert torch.isfinite(q(x)).all()
    assert any(r.kind == "log-int-softmax" for r in quant_report(q))
    assert is_calibrated(q)  # the unused uniform softmax quantizer is not built, so nothing is left uncalibrated
    probs = seen[0][seen[0] > 0]  # log-int softmax: powers of two 2^0 … 2^−15 (a float softmax is not)
    assert torch.equal(torch.log2(probs), torch.log2(probs).round()) and probs.min() >= 2**-15


def test_search_units_counts_and_round_trip():
    q = create_quant_model("deit_tiny_patch16_224", img_size=32, depth=3)
    calibrate(q, [torch.randn(2, 3, 32, 32)])
    units = search_units(q)
    assert [u.name for u in units] == ["blocks.0.attn", "blocks.1.attn", "blocks.2.attn"]
    assert all(u.numel == 4 * 192 for u in units)  # qkv (3D) + proj (D), reference §6.3
    v = units[1].get() * 1.5 + 0.001
    units[1].set(v)
    assert torch.equal(units[1].get(), v)
    with pytest.raises(ValueError, match="expected 768"):
        units[1].set(v[:10])
    lev = create_quant_model("levit_128s")
    assert len(search_units(lev)) == 11  # 9 Attention + 2 AttentionSubsample (reference §6.2)
    assert len(search_units(create_quant_model("levit_256"))) == 14


def test_quantizer_groups_partition_every_switch():
    q = create_quant_model("deit_tiny_patch16_224", img_size=32, depth=2)
    groups = quantizer_groups(q)
    ids = [id(m) for g in groups.values() for m in g]
    assert len(ids) == len(set(ids)) == len(switches(q))  # disjoint and complete
    # searched = qkv + proj of each block; mlp = fc1 + fc2 of each block; embed = patch conv; other = head
    assert len(groups["searched"]) == 2 * 2
    assert len(groups["mlp"]) == 2 * 2
    assert groups["embed"] == [q.patch_embed.proj.weight_quantizer]
    assert groups["other_weights"] == [q.head.weight_quantizer]
    assert all(not getattr(m, "is_weight", False) for m in groups["activations"])


def test_quantize_model_rejects_other_modules():
    from evolq_pl.models import quantize_model
    with pytest.raises(EvolQError, match="cannot quantize a Linear; supported model classes: Levit, LevitDistilled, SwinTransformer, VisionTransformer"):
        quantize_model(torch.nn.Linear(2, 2))


def test_bad_inputs_are_named():
    with pytest.raises(UnknownModelError, match="'resnet50'.*deit_tiny_patch16_224"):
        create_quant_model("resnet50")
    q = create_quant_model("deit_tiny_patch16_224", img_size=32, depth=1)
    with pytest.raises(NotCalibratedError, match="before calibration"):
        q(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="contains NaN"):
        calibrate(q, [torch.full((1, 3, 32, 32), float("nan"))])


def test_weight_cache_tracks_scale_changes():
    q = create_quant_model("deit_tiny_patch16_224", img_size=32, depth=1)
    calibrate(q, [torch.randn(2, 3, 32, 32)])
    lin: QLinear = q.blocks[0].attn.proj
    with torch.no_grad():  # the cache is for inference (no autograd graph to keep)
        w1 = lin.quantized_weight()
        assert lin.quantized_weight() is w1  # cached
        lin.weight_quantizer.set_scale(lin.weight_quantizer.scale * 1.3)
        w2 = lin.quantized_weight()
    assert w2 is not w1 and not torch.equal(w1, w2)
    assert isinstance(q.blocks[0].attn, QAttention)


def test_offline_without_weights_names_tag(tmp_path):
    # a fresh process, so the hub library reads HF_HUB_OFFLINE at import
    import os
    import subprocess
    import sys
    code = ("from evolq_pl import create_quant_model\n"
            "try:\n    create_quant_model('vit_base_patch16_224', pretrained=True)\n"
            "except Exception as e:\n    print(type(e).__name__, e)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120).stdout
    assert out.startswith("CheckpointError") and "vit_base_patch16_224.augreg_in21k_ft_in1k" in out
    assert "checkpoint_path" in out


def test_saved_random_checkpoint_reloads_identically(tmp_path):
    from evolq_pl.models.factory import sha256_file
    kw = dict(img_size=32, depth=1)
    model = randomize_(create_float_model("deit_small_patch16_224", **kw), seed=3)
    torch.save({"model": model.state_dict()}, tmp_path / "w.pth")  # FAIR-style key, as the DeiT releases
    again = create_float_model("deit_small_patch16_224", checkpoint_path=str(tmp_path / "w.pth"),
                               checkpoint_sha256=sha256_file(tmp_path / "w.pth"), **kw)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
