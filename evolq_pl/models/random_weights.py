"""Realistic random weights, for tests and benchmarks without hub weights (timm's init leaves LeViT's residual
branches at zero and the class token near zero, which makes a random model's output nearly input-independent)."""
from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Weights ~ N(0, 1/fan_in), norm gains ~ U(0.5, 1.5), biases/BN statistics small, tokens ~ N(0, 1)."""
    g = torch.Generator().manual_seed(seed)

    def normal(t: torch.Tensor, std: float) -> None:
        t.copy_(torch.randn(t.shape, generator=g) * std)

    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("cls_token", "pos_embed", "attention_biases"):
            normal(p, 1.0 if leaf != "pos_embed" else 0.5)
        elif p.dim() >= 2:
            normal(p, p[0].numel() ** -0.5)
        elif leaf == "weight":  # norm gains
            p.copy_(0.5 + torch.rand(p.shape, generator=g))
        else:
            normal(p, 0.1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            normal(m.running_mean, 0.1)
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return model
