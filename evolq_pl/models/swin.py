"""Swin-T/S/B (timm ``SwinTransformer``): the published Evol-Q Swin's quantization points, by module swap.

timm carries (B, H, W, C) between blocks; per-tensor quantizers and LayerNorms over the last dim do not mind,
but the per-channel PTF stream quantizers read their channel from the last dim of a 3-D tensor, so they are fed
(B, H·W, C) views. As in the published code, only the MLP and patch-embedding weights get bias correction
(not qkv, proj, the patch-merging reduction or the head); the relative-position-bias *table* is quantized
before the gather, the logits after the bias add, and the shift mask is added after that quantizer.
"""
from __future__ import annotations

import torch
from timm.models.swin_transformer import PatchMerging, SwinTransformer, SwinTransformerBlock, WindowAttention
from torch import nn

from evolq_pl.errors import EvolQError
from evolq_pl.layers import QLinear, QSoftmax, act, stream
from evolq_pl.models.convert import bind_streams, refuse_unsupported, register_converter, swap_class
from evolq_pl.models.units import register_embed, register_unit
from evolq_pl.quant.config import QuantConfig


def _no_bias_correction(*layers: nn.Module) -> None:
    """The published Swin leaves these weight quantizers without bias correction (reference §5)."""
    for layer in layers:
        if isinstance(layer, QLinear):  # an excluded layer stays float
            layer.bias_correction = False


class QWindowAttention(WindowAttention):
    """qkv (W) → qact1 → (q·d^−½)·kᵀ → qact_attn1 → + gather(qact_table(table)) → qact2 → + shift mask →
    softmax (quantized) → ·v → qact3 → proj (W) → qact4."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = x.shape  # (B·nW, N, C) windows
        # quantized straight into (3, B·nW, H, N, D) order: q, k, v contiguous without copies of their own
        qkv = self.qact1(self.qkv(x).view(b, n, 3, self.num_heads, -1), layout=(2, 0, 3, 1, 4))
        q, k, v = qkv.unbind(0)  # (B·nW, H, N, D)
        logits = self.qact_attn1((q * self.scale) @ k.transpose(-2, -1))  # (B·nW, H, N, N)
        table = self.qact_table(self.relative_position_bias_table)  # (169, H) for a 7×7 window
        bias = table[self.relative_position_index.view(-1)].view(n, n, -1).permute(2, 0, 1)  # (H, N, N)
        logits = self.qact2(logits + bias.unsqueeze(0))
        if mask is not None:  # −100 between tokens of different shifted regions, outside qact2's range
            windows = mask.shape[0]
            logits = (logits.view(-1, windows, self.num_heads, n, n) + mask.unsqueeze(1).unsqueeze(0)).view(b, -1, n, n)
        attn = self.attn_drop(self.softmax(logits, self.qact2))
        x = self.qact3((attn @ v).transpose(1, 2)).reshape(b, n, -1)  # written contiguous: (B·nW, N, C) view
        return self.qact4(self.proj_drop(self.proj(x)))


@register_converter(WindowAttention)
def _window_attention(mod: WindowAttention, cfg: QuantConfig) -> QWindowAttention:
    mod = swap_class(mod, QWindowAttention)
    mod.fused_attn = False  # the quantized forward above is the only path
    for name in ("qact1", "qact_attn1", "qact_table", "qact2", "qact3", "qact4"):
        setattr(mod, name, act(cfg))
    mod.softmax = QSoftmax(cfg)
    _no_bias_correction(mod.qkv, mod.proj)
    return mod


class QSwinBlock(SwinTransformerBlock):
    """norm1 → qact1 → shifted-window attention → (+) → qact2 (P8) → norm2 → qact3 → mlp → (+) → qact4 (P8).

    ``stream_in`` (bound by the model) is the quantizer whose grid the block's input lies on.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape  # (B, H, W, C)
        a = self.qact1(self.norm1(x, self.stream_in, self.qact1))
        x = self.qact2((x + self.drop_path1(self._attn(a))).reshape(b, h * w, c))  # (B, L, C) for the PTF grid
        m = self.qact3(self.norm2(x, self.qact2, self.qact3))
        return self.qact4(x + self.drop_path2(self.mlp(m))).reshape(b, h, w, c)


@register_converter(SwinTransformerBlock)
def _swin_block(mod: SwinTransformerBlock, cfg: QuantConfig) -> QSwinBlock:
    if mod.dynamic_mask or mod.always_partition:
        raise NotImplementedError("Swin blocks with dynamic_mask or always_partition are not supported")
    mod = swap_class(mod, QSwinBlock)
    mod.qact1, mod.qact2, mod.qact3, mod.qact4 = act(cfg), stream(cfg), act(cfg), stream(cfg)
    return mod


register_unit(QSwinBlock, "attn")


class QPatchMerging(PatchMerging):
    """2×2 neighbours concatenated → norm (reads the incoming stream's C scales tiled ×4) → qact1 →
    reduction (W) → qact2 (P8, the next stage's stream)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        if h % 2 or w % 2:
            raise EvolQError(f"patch merging needs an even resolution, got {h}×{w}")
        x = x.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).flatten(3)  # (B, H/2, W/2, 4C)
        x = self.reduction(self.qact1(self.norm(x, self.stream_in, self.qact1, in_repeat=4)))  # (B, H/2, W/2, 2C)
        return self.qact2(x.reshape(b, -1, x.shape[-1])).reshape(x.shape)


@register_converter(PatchMerging)
def _patch_merging(mod: PatchMerging, cfg: QuantConfig) -> QPatchMerging:
    mod = swap_class(mod, QPatchMerging)
    mod.qact1, mod.qact2 = act(cfg), stream(cfg)
    _no_bias_correction(mod.reduction)
    return mod


class QSwinTransformer(SwinTransformer):
    """Input quantizer → patch embedding → blocks (with patch merging between stages) → final norm → qact2 →
    average pool → qact3 → head (W) → act_out. ``stage_fns()``: the embedding, each patch merging, each block
    and the tail, so a forward can start at any block."""

    def forward_embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.patch_embed(self.qact_input(x))  # (B, H, W, C)

    def forward_prelogits(self, x: torch.Tensor) -> torch.Tensor:
        x = self.qact2(self.norm(x, self.layers[-1].blocks[-1].qact4, self.qact2))  # (B, H, W, C)
        return self.qact3(self.head.global_pool(x))  # (B, C)

    def forward_tail(self, x: torch.Tensor) -> torch.Tensor:
        return self.act_out(self.head.fc(self.head.drop(self.forward_prelogits(x))))

    def stage_fns(self, prelogits: bool = False) -> list:
        stages: list = [self.forward_embed]
        for layer in self.layers:
            if isinstance(layer.downsample, QPatchMerging):
                stages.append(layer.downsample)
            stages.extend(layer.blocks)
        return [*stages, self.forward_prelogits if prelogits else self.forward_tail]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stage_fns():
            x = stage(x)
        return x


@register_converter(SwinTransformer)
def _swin(mod: SwinTransformer, cfg: QuantConfig) -> QSwinTransformer:
    refuse_unsupported("SwinTransformer", {
        "global_pool != 'avg'": mod.global_pool != "avg",
        "absolute position embedding": getattr(mod, "absolute_pos_embed", None) is not None,
        "patch embedding without a LayerNorm": isinstance(mod.patch_embed.norm, nn.Identity),
    })
    if any(type(layer.downsample) is PatchMerging for layer in mod.layers):
        raise NotImplementedError("excluding a Swin patch merging is not supported: the next stage's integer "
                                  "LayerNorm reads the grid of its output")
    mod = swap_class(mod, QSwinTransformer)
    mod.qact_input = act(cfg) if cfg.input_quant else nn.Identity()
    mod.qact2, mod.qact3, mod.act_out = act(cfg), act(cfg), act(cfg)
    _no_bias_correction(mod.head.fc)
    parts = [p for layer in mod.layers for p in (layer.downsample, *layer.blocks)
             if isinstance(p, (QPatchMerging, QSwinBlock))]
    # the embedding's per-tensor A8 is the first stream (as published); a patch merging's output is its qact2
    bind_streams(mod.patch_embed.qact, parts, lambda p: p.qact2 if isinstance(p, QPatchMerging) else p.qact4)
    return mod


register_embed(QSwinTransformer, "patch_embed")
