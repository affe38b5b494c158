"""ViT / DeiT (timm ``VisionTransformer``): quantization points of reference §4.1, by module swap."""
from __future__ import annotations

import torch
from timm.layers import LayerNorm as TimmLayerNorm
from timm.layers import Format, Mlp, PatchEmbed, nchw_to
from timm.models.vision_transformer import Attention, Block, VisionTransformer
from torch import nn

from evolq_pl.layers import QLayerNorm, QSoftmax, act, stream
from evolq_pl.models.convert import (bind_streams, refuse_unsupported, register_converter, register_swap,
                                     swap_class)
from evolq_pl.models.units import register_embed, register_unit
from evolq_pl.quant.config import QuantConfig

register_converter(TimmLayerNorm)(QLayerNorm.from_float)


class QPatchEmbed(PatchEmbed):
    """conv (W) → flatten (ViT: (B, N, D)) or channels-last (Swin: (B, H', W', D)) → [``qact_before_norm`` (A8) →
    integer LayerNorm, when the embedding has a norm (Swin)] → ``qact`` (A8)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # (B, D, H', W')
        x = x.flatten(2).transpose(1, 2) if self.flatten else nchw_to(x, self.output_fmt)
        if isinstance(self.norm, QLayerNorm):
            x = self.norm(self.qact_before_norm(x), self.qact_before_norm, self.qact)
        return self.qact(x)


@register_converter(PatchEmbed)
def _patch_embed(mod: PatchEmbed, cfg: QuantConfig) -> QPatchEmbed:
    if not (mod.flatten or mod.output_fmt == Format.NHWC) or getattr(mod, "dynamic_img_pad", False):
        raise NotImplementedError("only a fixed-size PatchEmbed that flattens (ViT) or is channels-last (Swin)")
    if not isinstance(mod.norm, (nn.Identity, QLayerNorm)):
        raise NotImplementedError(f"PatchEmbed norm {type(mod.norm).__name__} is not supported")
    mod = swap_class(mod, QPatchEmbed)
    mod.qact = act(cfg)
    if isinstance(mod.norm, QLayerNorm):
        mod.qact_before_norm = act(cfg)
    return mod


class QAttention(Attention):
    """qkv (W) → qact1 → q·kᵀ·d^−½ → qact_attn1 → softmax (quantized) → ·v → qact2 → proj (W) → qact3."""

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        b, n, _ = x.shape
        # one per-tensor scale over (B, N, 3·H·D); quantized straight into (3, B, H, N, D) order, so q, k, v are
        # contiguous (B, H, N, D) without copies of their own
        qkv = self.qact1(self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim), layout=(2, 0, 3, 1, 4))
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        logits = self.qact_attn1((q @ k.transpose(-2, -1)) * self.scale)  # (B, H, N, N)
        attn = self.attn_drop(self.softmax(logits, self.qact_attn1))
        x = (attn @ v).transpose(1, 2)  # (B, N, H, D) view; qact2 writes it contiguous
        x = self.qact2(x) if isinstance(self.norm, nn.Identity) else self.qact2(self.norm(x.reshape(b, n, -1)))
        return self.qact3(self.proj_drop(self.proj(x.reshape(b, n, self.attn_dim))))


@register_converter(Attention)
def _attention(mod: Attention, cfg: QuantConfig) -> QAttention:
    if getattr(mod, "gate", None) is not None:
        raise NotImplementedError("gated attention is not supported")
    mod = swap_class(mod, QAttention)
    mod.qact1, mod.qact_attn1, mod.qact2, mod.qact3 = act(cfg), act(cfg), act(cfg), act(cfg)
    mod.softmax = QSoftmax(cfg)
    return mod


class QMlp(Mlp):
    """fc1 (W) → GELU (float) → qact1 → fc2 (W) → qact2."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.qact1(self.drop1(self.act(self.fc1(x))))
        return self.qact2(self.drop2(self.fc2(self.norm(x))))


register_swap(Mlp, QMlp, qact1=act, qact2=act)


class QBlock(Block):
    """norm1 → qact1 → attn → (+) → qact2 (P8) → norm2 → qact3 → mlp → (+) → qact4 (P8).

    ``stream_in`` (bound by the model) is the P8 quantizer whose grid the block's input lies on; the
    integer LayerNorm reads its per-channel scales.
    """

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        a = self.qact1(self.norm1(x, self.stream_in, self.qact1))
        x = self.qact2(x + self.drop_path1(self.ls1(self.attn(a))))
        m = self.qact3(self.norm2(x, self.qact2, self.qact3))
        return self.qact4(x + self.drop_path2(self.ls2(self.mlp(m))))


register_unit(QBlock, "attn")


register_swap(Block, QBlock, qact1=act, qact2=stream, qact3=act, qact4=stream)


class QVisionTransformer(VisionTransformer):
    """Reference §4.1 steps 1–6. Exposes ``stage_fns()`` so a forward can start at any block."""

    def forward_embed(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(self.qact_input(x))  # (B, N, D)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1+N, D)
        x = self.qact_embed(x) + self.qact_pos(self.pos_embed)
        return self.qact1(self.pos_drop(x))

    def forward_prelogits(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x, self.blocks[-1].qact4, self.qact2)
        return self.qact2(x[:, 0])  # class token (B, D)

    def forward_tail(self, x: torch.Tensor) -> torch.Tensor:
        return self.act_out(self.head(self.head_drop(self.fc_norm(self.forward_prelogits(x)))))

    def stage_fns(self, prelogits: bool = False) -> list:
        """The forward as a chain: embed, each block, tail. ``forward`` = their composition.
        ``prelogits=True`` ends with the (quantized) features the classifier head reads."""
        return [self.forward_embed, *self.blocks, self.forward_prelogits if prelogits else self.forward_tail]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stage_fns():
            x = stage(x)
        return x


def _check_supported(vit: VisionTransformer) -> None:
    refuse_unsupported("VisionTransformer", {
        "class token": vit.cls_token is None, "register tokens": vit.reg_token is not None,
        "no_embed_class": vit.no_embed_class, "global_pool != 'token'": vit.global_pool != "token",
        "dynamic_img_size": vit.dynamic_img_size, "norm_pre": not isinstance(vit.norm_pre, nn.Identity),
    })


register_embed(QVisionTransformer, "patch_embed")


@register_converter(VisionTransformer)
def _vit(mod: VisionTransformer, cfg: QuantConfig) -> QVisionTransformer:
    _check_supported(mod)
    mod = swap_class(mod, QVisionTransformer)
    mod.qact_input = act(cfg) if cfg.input_quant else nn.Identity()
    mod.qact_embed, mod.qact_pos, mod.qact1 = act(cfg), act(cfg), stream(cfg)
    mod.qact2, mod.act_out = act(cfg), act(cfg)
    bind_streams(mod.qact1, [b for b in mod.blocks if isinstance(b, QBlock)], lambda block: block.qact4)
    return mod
