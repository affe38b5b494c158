"""Fitness losses between quantized (student) and teacher outputs, one calibration batch at a time."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from evolq_pl.errors import EvolQError

Loss = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
LOSSES: dict[str, Loss] = {}


def register_loss(name: str) -> Callable[[Loss], Loss]:
    def wrap(fn: Loss) -> Loss:
        LOSSES[name] = fn
        return fn
    return wrap


def get_loss(name: str) -> Loss:
    if name not in LOSSES:
        raise EvolQError(f"unknown loss {name!r}; accepted: {', '.join(sorted(LOSSES))}")
    return LOSSES[name]


@register_loss("infonce")
def infonce(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 3.0) -> torch.Tensor:
    """Reference §6.7: L2-normalise, S = q·kᵀ/T over the batch (B, B), cross-entropy with the diagonal as
    the positive (quantized queries against teacher keys only), scaled by 2T."""
    q, k = F.normalize(student.flatten(1), dim=1), F.normalize(teacher.flatten(1), dim=1)
    sim = q @ k.t() / temperature  # (B, B)
    target = torch.arange(sim.shape[0], device=sim.device)
    return F.cross_entropy(sim, target) * (2 * temperature)


@register_loss("mse")
def mse(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 3.0) -> torch.Tensor:
    return F.mse_loss(student, teacher)


@register_loss("kl")
def kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 3.0) -> torch.Tensor:
    """KL(teacher ‖ student) of temperature-softened distributions, scaled by T² (Hinton)."""
    log_p = F.log_softmax(student / temperature, dim=-1)
    log_q = F.log_softmax(teacher / temperature, dim=-1)
    return F.kl_div(log_p, log_q, log_target=True, reduction="batchmean") * temperature**2


@register_loss("cosine")
def cosine(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 3.0) -> torch.Tensor:
    return (1 - F.cosine_similarity(student.flatten(1), teacher.flatten(1), dim=1)).mean()
