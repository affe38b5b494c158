"""Plain supervised training of the small reference models (float; no quantization involved)."""
from __future__ import annotations

import math
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

from evolq_pl.lightning.accuracy import AccuracyModule
from evolq_pl.models.factory import create_float_model


def augment(x: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random horizontal flip and random translation by up to ``pad`` pixels, per sample. (B, C, H, W)."""
    b, _, h, w = x.shape
    flip = torch.rand(b, generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if pad == 0:
        return x
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    dx, dy = torch.randint(0, 2 * pad + 1, (2, b), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None]).clamp_max(h + 2 * pad - 1)  # (B, H)
    cols = (dx[:, None] + torch.arange(w)[None])  # (B, W)
    idx_b = torch.arange(b)[:, None, None]
    return padded.permute(0, 2, 3, 1)[idx_b, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """LR multiplier: linear warmup over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(total - warmup, 1))))


class ClassifierModule(AccuracyModule):
    """Trains a timm model from scratch with AdamW + warmup-cosine, label smoothing and light augmentation.

    Args:
        model_name: supported timm model name (architecture family); size it with ``model_kwargs``.
        model_kwargs: timm overrides (``img_size``, ``in_chans``, ``num_classes``, ``embed_dim``, ...).
        lr, weight_decay, warmup_epochs, label_smoothing, augment_pad: optimisation settings.
    """

    def __init__(self, model_name: str, model_kwargs: dict[str, Any] | None = None, lr: float = 1e-3,
                 weight_decay: float = 0.05, warmup_epochs: int = 1, label_smoothing: float = 0.1,
                 augment_pad: int = 2) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = create_float_model(model_name, **(model_kwargs or {})).train()
        num_classes = (model_kwargs or {}).get("num_classes", 1000)
        self.track_accuracy(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(augment(x, self.hparams.augment_pad)), y,
                               label_smoothing=self.hparams.label_smoothing)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        total = self.trainer.estimated_stepping_batches
        warmup = self.hparams.warmup_epochs * total // max(self.trainer.max_epochs or 1, 1)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, partial(warmup_cosine, warmup=warmup, total=total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # also keep a plain float state dict: this is what we ship and what the quantizer loads
        checkpoint["float_state_dict"] = self.model.state_dict()
