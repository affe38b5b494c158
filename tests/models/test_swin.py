"""Swin: the published quantization points and bias-correction flags, the shift mask outside the logits
quantizer, patch merging reading the stream's scales tiled ×4, the stage view."""
import torch

from evolq_pl import QuantConfig, create_quant_model, quant_disabled, quant_report
from evolq_pl.layers import QLinear
from evolq_pl.models.swin import QPatchMerging, QSwinBlock
from evolq_pl.quant.functional import int_layernorm
from evolq_pl.models.random_weights import randomize_
from tests.search.helpers import TINY, tiny_model

NAME, KW, SIZE = TINY["swin"]


def test_quantization_points_of_a_block_and_the_model():
    q = create_quant_model(NAME, QuantConfig(w_bits=4), **KW)
    rows = {r.name: r for r in quant_report(q)}
    block = [n.removeprefix("layers.0.blocks.1.") for n in rows if n.startswith("layers.0.blocks.1.")]
    assert sorted(block) == sorted([
        "norm1", "qact1", "attn.qkv.weight_quantizer", "attn.qact1", "attn.qact_attn1", "attn.qact_table",
        "attn.qact2", "attn.softmax.quantizer", "attn.qact3", "attn.proj.weight_quantizer", "attn.qact4", "qact2",
        "norm2", "qact3", "mlp.fc1.weight_quantizer", "mlp.qact1", "mlp.fc2.weight_quantizer", "mlp.qact2", "qact4"])
    assert rows["layers.0.blocks.1.qact4"].kind == "ptf" and rows["layers.1.downsample.qact2"].kind == "ptf"
    for name in ("qact_input", "patch_embed.qact_before_norm", "patch_embed.norm", "patch_embed.qact",
                 "layers.1.downsample.norm", "layers.1.downsample.qact1", "norm", "qact2", "qact3", "act_out",
                 "head.fc.weight_quantizer"):
        assert name in rows, name
    # bias correction only on the MLP and patch-embedding weights, as in the published Swin (reference §5)
    corrected = {n for n, m in q.named_modules() if isinstance(m, QLinear) and m.bias_correction}
    assert corrected == {f"layers.{i}.blocks.{j}.mlp.{fc}" for i in (0, 1) for j in (0, 1) for fc in ("fc1", "fc2")}
    assert q.patch_embed.proj.bias_correction


def test_stage_view_and_stream_binding():
    q = create_quant_model(NAME, **KW)
    stages = q.stage_fns()
    # embed, 2 blocks, patch merging, 2 blocks, tail
    assert [type(s).__name__ for s in stages[1:-1]] == ["QSwinBlock", "QSwinBlock", "QPatchMerging", "QSwinBlock",
                                                        "QSwinBlock"]
    merge, b10 = q.layers[1].downsample, q.layers[1].blocks[0]
    assert isinstance(merge, QPatchMerging) and isinstance(b10, QSwinBlock)
    assert q.layers[0].blocks[0].stream_in is q.patch_embed.qact  # the first stream is the embedding's A8
    assert merge.stream_in is q.layers[0].blocks[1].qact4 and b10.stream_in is merge.qact2


def test_float_mode_is_timm_and_the_shift_mask_stays_out_of_the_logits_quantizer():
    from evolq_pl.models.factory import create_float_model
    float_model = randomize_(create_float_model(NAME, **KW))
    model, batches = tiny_model("swin")
    model.load_state_dict(float_model.state_dict(), strict=False)
    x = batches[0]
    with torch.no_grad(), quant_disabled(model):
        assert torch.equal(model(x), float_model(x))  # the replaced forwards keep timm's arithmetic
    shifted = model.layers[0].blocks[1]
    assert shifted.shift_size == (3, 3) and shifted.attn_mask.min() == -100
    # calibrated on logits + bias only: the −100 of the mask never entered its range
    qact2 = shifted.attn.qact2
    low = (qact2.bit_type.lower - qact2.zero_point) * qact2.scale
    assert low.item() > -100


def test_patch_merging_norm_reads_the_stream_scales_tiled_four_times():
    model, batches = tiny_model("swin")
    merge = model.layers[1].downsample
    seen = []
    merge.norm.register_forward_hook(lambda mod, args, out: seen.append((args[0], out)))
    with torch.no_grad():
        model(batches[0])
    x, out = seen[0]
    scales = merge.stream_in.scale  # (C,) PTF scales of the last block's stream
    assert x.shape[-1] == 4 * scales.numel()
    expected = int_layernorm(x, scales.repeat(4), merge.qact1.scale, merge.norm.weight, merge.norm.bias)
    assert torch.equal(out, expected)


def test_excluding_a_patch_merging_is_refused():
    import pytest
    with pytest.raises(NotImplementedError, match="excluding a Swin patch merging"):
        create_quant_model(NAME, QuantConfig(exclude=["layers.1.downsample"]), **KW)
