"""Top-1/top-5 evaluation of a model over a loader (used at the end of ``fit`` and by benchmarks)."""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from evolq_pl.errors import EvolQError
from evolq_pl.quant.functional import all_finite
from evolq_pl.report.stats import pack_bits


def topk_metrics(num_classes: int, device: torch.device | str = "cpu") -> dict[str, MulticlassAccuracy]:
    ks = (1, 5) if num_classes > 5 else (1,)
    return {f"top{k}": MulticlassAccuracy(num_classes=num_classes, top_k=k, average="micro").to(device) for k in ks}


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], num_classes: int,
             device: torch.device | str = "cpu") -> dict[str, float | int | str]:
    """Accuracy in percent, {"top1": …, "top5": …}; "correct": which images top-1 gets right, in loader order
    (``evolq_pl.report.stats.pack_bits``; for paired tests between two models on the same images), of "images".

    Raises:
        ValueError: a batch of images holds a NaN or an infinity (their top-1 would mean nothing: a NaN
            logit row counts as class 0); the error names the batch.
    """
    metrics = topk_metrics(num_classes, device)
    correct = []
    for i, (x, y) in enumerate(batches):
        if not all_finite(x):
            raise EvolQError(f"evaluation batch {i} (images {tuple(x.shape)}) contains NaN or inf values")
        logits, y = model(x.to(device)), y.to(device)
        for m in metrics.values():
            m.update(logits, y)
        correct.append(logits.argmax(dim=1) == y)
    hits = torch.cat(correct).tolist() if correct else []
    return {**{k: 100.0 * m.compute().item() for k, m in metrics.items()}, "correct": pack_bits(hits),
            "images": len(hits)}


def first_images(loader: Iterable[tuple[torch.Tensor, torch.Tensor]], n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The loader's batches up to (at least) ``n`` images, kept in memory for repeated evaluation."""
    batches, seen = [], 0
    for x, y in loader:
        batches.append((x, y))
        seen += len(y)
        if seen >= n:
            break
    return batches


def _ranks(values: list[float]) -> torch.Tensor:
    """Average ranks (ties share the mean rank)."""
    v = torch.tensor(values, dtype=torch.float64)
    order = v.argsort()
    ranks = torch.empty_like(v)
    ranks[order] = torch.arange(len(v), dtype=torch.float64)
    for value in v.unique():
        tied = v == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman rank correlation (NaN when either side is constant)."""
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = (ra.norm() * rb.norm()).item()
    return float("nan") if denom == 0 else (ra @ rb).item() / denom
