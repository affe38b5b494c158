"""LeViT (timm ``Levit``/``LevitDistilled``): BatchNorm folded first, then the points of reference §4.2."""
from __future__ import annotations

from collections import OrderedDict

import torch
from timm.models.levit import (Attention, AttentionDownsample, ConvNorm, Levit, LevitBlock, LevitDistilled,
                               LevitDownsample, LevitMlp, LinearNorm, NormLinear, Stem8, Stem16)
from torch import nn

from evolq_pl.layers import act, stream
from evolq_pl.models.convert import register_converter, register_preparer, register_swap, swap_class
from evolq_pl.models.units import register_embed, register_unit
from evolq_pl.quant.config import QuantConfig

_FOLDABLE = (ConvNorm, LinearNorm, NormLinear)


@register_preparer(Levit, LevitDistilled)
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Replace every Conv+BN, Linear+BN and BN+Linear pair by one float layer with a bias (in place)."""
    for name, child in list(model.named_children()):
        setattr(model, name, child.fuse() if isinstance(child, _FOLDABLE) else fold_batchnorm(child))
    return model


@register_converter(Stem16, Stem8)
def _stem(mod: nn.Sequential, cfg: QuantConfig) -> nn.Sequential:
    """Each conv and each Hardswish output gets a PTF quantizer: conv1, qact0, act1, qact1, …, conv4, qact6."""
    layers: list[tuple[str, nn.Module]] = []
    for i, (name, layer) in enumerate(mod.named_children()):
        layers += [(name, layer), (f"qact{i}", stream(cfg))]
    return nn.Sequential(OrderedDict(layers))


def _attend(self: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Shared LeViT attention core: (B, H, Nq, d)·(B, H, d, Nk) → (B, H, Nq, dv), with its quantizers."""
    q, k, v = self.qact_q(q), self.qact_k(k), self.qact_v(v)
    attn = self.qact_attn1(q @ k)
    attn = self.qact_attn2(attn * self.scale + self.get_attention_biases(device))
    return self.qact_softmax(torch.softmax(attn, dim=-1)) @ v


def _add_attention_quants(mod: nn.Module, cfg: QuantConfig) -> None:
    for name in ("qact_q", "qact_k", "qact_v", "qact_attn1", "qact_attn2", "qact_softmax", "qact1", "qact_out"):
        mod.add_module(name, act(cfg))


class QLevitAttention(Attention):
    """qkv (W) → qact_q/k/v → q·k → attn1 → ·scale + bias → attn2 → softmax → qact_softmax → ·v → qact1
    → Hardswish → proj (W) → qact_out."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, self.num_heads, -1).split([self.key_dim, self.key_dim, self.val_dim], dim=3)
        out = _attend(self, q.permute(0, 2, 1, 3), k.permute(0, 2, 3, 1), v.permute(0, 2, 1, 3), x.device)
        out = self.qact1(out.transpose(1, 2).reshape(b, n, self.val_attn_dim))  # (B, N, H·dv)
        return self.qact_out(self.proj(out))


class QLevitAttentionDownsample(AttentionDownsample):
    """As QLevitAttention with q from the subsampled tokens, and a quantizer after the proj Hardswish."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        k, v = self.kv(x).view(b, n, self.num_heads, -1).split([self.key_dim, self.val_dim], dim=3)
        q = self.q(x).view(b, -1, self.num_heads, self.key_dim).permute(0, 2, 1, 3)  # (B, H, Nq, d)
        out = _attend(self, q, k.permute(0, 2, 3, 1), v.permute(0, 2, 1, 3), x.device)
        out = self.qact1(out.transpose(1, 2).reshape(b, -1, self.val_attn_dim))  # (B, Nq, H·dv)
        return self.qact_out(self.proj(out))


def _quant_attention(mod: nn.Module, cls: type, cfg: QuantConfig) -> nn.Module:
    if mod.use_conv:
        raise NotImplementedError("LeViT with use_conv=True is not supported")
    mod = swap_class(mod, cls)
    _add_attention_quants(mod, cfg)
    return mod


@register_converter(Attention)
def _attention(mod: Attention, cfg: QuantConfig) -> QLevitAttention:
    return _quant_attention(mod, QLevitAttention, cfg)


@register_converter(AttentionDownsample)
def _attention_downsample(mod: AttentionDownsample, cfg: QuantConfig) -> QLevitAttentionDownsample:
    mod = _quant_attention(mod, QLevitAttentionDownsample, cfg)
    mod.proj = nn.Sequential(OrderedDict([("act", mod.proj.act), ("qact", act(cfg)), ("ln", mod.proj.ln)]))
    return mod


class QLevitMlp(LevitMlp):
    """ln1 (W) → qact0 → Hardswish → qact1 → ln2 (W); the output is quantized by the residual's P8."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln2(self.drop(self.qact1(self.act(self.qact0(self.ln1(x))))))


register_swap(LevitMlp, QLevitMlp, qact0=act, qact1=act)


class QLevitBlock(LevitBlock):
    """Each residual sum is followed by a PTF quantizer (``qact_res1``, ``qact_res2``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.qact_res1(x + self.drop_path1(self.attn(x)))
        return self.qact_res2(x + self.drop_path2(self.mlp(x)))


register_unit(QLevitBlock, "attn")


register_swap(LevitBlock, QLevitBlock, qact_res1=stream, qact_res2=stream)


class QLevitDownsample(LevitDownsample):
    """attention-subsample (not residual), then residual MLP followed by a PTF quantizer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attn_downsample(x)
        return self.qact_res(x + self.drop_path(self.mlp(x)))


register_unit(QLevitDownsample, "attn_downsample")


register_swap(LevitDownsample, QLevitDownsample, qact_res=stream)


class QLevit(LevitDistilled):
    """stem → qact_embed → tokens → stages → qact_postblocks → mean → qact_mean → head(s) → qact_out."""

    def forward_embed(self, x: torch.Tensor) -> torch.Tensor:
        x = self.qact_embed(self.stem(self.qact_input(x)))  # (B, C, H, W)
        return x.flatten(2).transpose(1, 2)  # (B, N, C)

    def forward_prelogits(self, x: torch.Tensor) -> torch.Tensor:
        return self.qact_mean(self.qact_postblocks(x).mean(dim=1))  # (B, C)

    def forward_tail(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_prelogits(x)
        if self.head_dist is None:
            return self.qact_out(self.qact_head(self.head(x)))
        return self.qact_out((self.qact_head(self.head(x)) + self.qact_head_dist(self.head_dist(x))) / 2)

    def stages_list(self) -> list[nn.Module]:
        """Residual units in forward order: each stage's downsample (if any) then its blocks."""
        out: list[nn.Module] = []
        for stage in self.stages:
            if not isinstance(stage.downsample, nn.Identity):
                out.append(stage.downsample)
            out.extend(stage.blocks)
        return out

    def stage_fns(self, prelogits: bool = False) -> list:
        """The forward as a chain (see QVisionTransformer.stage_fns)."""
        return [self.forward_embed, *self.stages_list(), self.forward_prelogits if prelogits else self.forward_tail]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stage_fns():
            x = stage(x)
        return x


register_embed(QLevit, "stem")


@register_converter(Levit, LevitDistilled)
def _levit(mod: Levit, cfg: QuantConfig) -> QLevit:
    if mod.use_conv or mod.global_pool != "avg":
        raise NotImplementedError("only token-mode LeViT with average pooling is supported")
    head_dist = getattr(mod, "head_dist", None)
    mod = swap_class(mod, QLevit)
    mod.head_dist = head_dist  # None for a non-distilled Levit
    mod.qact_input = act(cfg) if cfg.input_quant else nn.Identity()
    for name in ("qact_embed", "qact_postblocks", "qact_mean", "qact_head", "qact_head_dist", "qact_out"):
        mod.add_module(name, act(cfg))
    return mod
