"""Plots people compare: the search's progress (written after every fit) and loss landscapes."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from evolq_pl.io import atomic_path

METRICS = ("infonce", "mse", "kl", "cosine", "ce", "top1")


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(plt: Any, fig: Any, path: Path) -> None:
    """Lay out, write (atomically: never a partial image) and close ``fig``."""
    try:
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)


def plot_progress(history: Sequence[dict[str, Any]], fitness_init: float, path: Path, title: str = "") -> None:
    """Best calibration fitness vs evaluations, and each step's improvement (bars, by unit)."""
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    evals = [0] + [h["evaluations"] for h in history]
    fits = [fitness_init] + [h["fitness"] for h in history]
    ax1.step(evals, fits, where="post")
    ax1.set_ylabel("best calibration fitness")
    ax1.set_title(title or "Evol-Q search progress")
    ax2.bar([h["evaluations"] for h in history], [h["improvement"] for h in history], width=1.5)
    for h in history:
        if h["improvement"] > 0:
            ax2.annotate(str(h["unit"]), (h["evaluations"], h["improvement"]), fontsize=6, ha="center", va="bottom")
    ax2.set_xlabel("fitness evaluations")
    ax2.set_ylabel("improvement per step\n(label = unit)")
    _save(plt, fig, path)


def plot_landscape(rows: Sequence[dict[str, float]], dims: int, path: Path, title: str) -> None:
    """1-D: one line plot per metric; 2-D: one contour plot per metric."""
    plt = _plt()
    metrics = [m for m in METRICS if m in rows[0]]
    fig, axes = plt.subplots(2, (len(metrics) + 1) // 2, figsize=(4 * ((len(metrics) + 1) // 2), 6.5))
    for ax, metric in zip(axes.flat, metrics):
        if dims == 1:
            ax.plot([r["a"] for r in rows], [r[metric] for r in rows], marker=".", lw=1)
            ax.set_xlabel("relative step along direction 1")
        else:
            grid = sorted({r["a"] for r in rows})
            z = [[next(r[metric] for r in rows if r["a"] == a and r["b"] == b) for a in grid] for b in grid]
            cs = ax.contourf(grid, grid, z, levels=15)
            fig.colorbar(cs, ax=ax)
            ax.set_xlabel("direction 1")
            ax.set_ylabel("direction 2")
        ax.set_title(metric)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    fig.suptitle(title)
    _save(plt, fig, path)
