"""Paired statistics for "does the search help": the mean paired difference over seeds with a 95 % t
interval, and the exact McNemar test on per-image correctness pooled over seeds. Standard library only: scipy
is not among the project's dependencies (torch, lightning, timm, torchmetrics, datasets, numpy, jsonargparse);
the t quantile and the incomplete beta are checked against published tables (tests/report/test_stats.py)."""
from __future__ import annotations

import math
from typing import Any, Sequence

from evolq_pl.errors import EvolQError


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0.0 or x >= 1.0:
        return 0.0 if x <= 0.0 else 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: int) -> float:
    """Student's t distribution function."""
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: int) -> float:
    """Inverse of ``t_cdf`` for 0.5 ≤ p < 1 (bisection to 1e-12)."""
    if not 0.5 <= p < 1 or df < 1:
        raise EvolQError(f"t_quantile(p={p}, df={df}): needs 0.5 ≤ p < 1 and df ≥ 1")
    lo, hi = 0.0, 1e6
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


def paired_ci95(deltas: Sequence[float]) -> tuple[float, float, float]:
    """Mean of the paired differences and its 95 % t interval (sample std, ddof = 1); one value: no interval."""
    n = len(deltas)
    if n == 0:
        raise EvolQError("paired_ci95: no paired differences (no seeds)")
    mean = math.fsum(deltas) / n
    if n < 2:
        return mean, math.nan, math.nan
    sd = math.sqrt(math.fsum((d - mean) ** 2 for d in deltas) / (n - 1))
    half = t_quantile(0.975, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (images only A gets right, only B gets right):
    a binomial(n, ½) test of the smaller count, doubled and capped at 1."""
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    tail = math.fsum(math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2))
                     for i in range(k + 1))
    return min(1.0, 2.0 * tail)


def pack_bits(correct: Sequence[bool]) -> str:
    """Per-image correctness as hex (4 images a digit, first image in the highest bit), for results.json."""
    bits = "".join("1" if c else "0" for c in correct)
    bits += "0" * (-len(bits) % 4)
    return "".join(f"{int(bits[i:i + 4], 2):x}" for i in range(0, len(bits), 4))


def unpack_bits(text: str, n: int, field: str = "correct") -> list[bool]:
    """Inverse of ``pack_bits``; ``field`` names the results.json entry in the error."""
    if len(text) != (n + 3) // 4:
        raise EvolQError(f"{field}: {len(text)} hex digits, but {n} images need {(n + 3) // 4}")
    bits = "".join(f"{int(ch, 16):04b}" for ch in text)
    return [b == "1" for b in bits[:n]]


def paired_comparison(base: Sequence[float], new: Sequence[float], base_correct: Sequence[Sequence[bool]] = (),
                      new_correct: Sequence[Sequence[bool]] = ()) -> dict[str, object]:
    """``new`` against ``base`` (e.g. Evol-Q against the calibrated init), paired by seed: ``n_seeds``,
    ``delta_mean``, ``delta_ci95`` ([low, high]), ``gain`` (the interval lies above zero), and with per-image
    correctness for every seed ``mcnemar_p`` and the pooled discordant counts.

    The McNemar test pools the same test images over seeds as if independent: its p-value speaks to these
    runs (does Evol-Q's set of right answers differ from init's beyond chance?), not to new seeds; the
    interval over seeds is what a gain is judged by."""
    deltas = [b - a for a, b in zip(base, new)]
    mean, low, high = paired_ci95(deltas)
    # a zero-width interval (identical deltas) supports no claim: the seeds show no spread to judge by
    spread = len(deltas) > 1 and high > low
    out: dict[str, object] = {"n_seeds": len(deltas), "delta_mean": mean, "delta_ci95": [low, high],
                              "gain": bool(spread and low > 0), "loss": bool(spread and high < 0)}
    if base_correct and len(base_correct) == len(new_correct) == len(deltas):
        only_base = sum(a and not b for ca, cb in zip(base_correct, new_correct) for a, b in zip(ca, cb))
        only_new = sum(b and not a for ca, cb in zip(base_correct, new_correct) for a, b in zip(ca, cb))
        out.update(mcnemar_p=mcnemar_exact(only_base, only_new), only_base=only_base, only_new=only_new)
    return out


def compare_runs(runs: Sequence[dict[str, Any]], base_runs: Sequence[dict[str, Any]] | None = None,
                 base: str = "init", new: str = "evolq") -> dict[str, object] | None:
    """``top1_<new>`` of ``runs`` against ``top1_<base>`` of ``base_runs`` (default: the same runs, i.e. Evol-Q
    against the calibrated init) over results.json records of one setting, one per seed, paired in order;
    McNemar where every run stored per-image correctness. None when a run lacks either top-1."""
    base_runs = runs if base_runs is None else base_runs
    pairs = [(b, r) for b, r in zip(base_runs, runs)]
    if not pairs or len(base_runs) != len(runs) or any(
            b.get(f"top1_{base}") is None or r.get(f"top1_{new}") is None for b, r in pairs):
        return None
    stored = all(f"correct_{base}" in b and f"correct_{new}" in r for b, r in pairs)
    bits = lambda rs, f: [unpack_bits(r[f"correct_{f}"], r[f"images_{f}"], f"correct_{f}") for r in rs] \
        if stored else ()  # noqa: E731
    return paired_comparison([b[f"top1_{base}"] for b in base_runs], [r[f"top1_{new}"] for r in runs],
                             bits(base_runs, base), bits(runs, new))


ALPHA = 0.05


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values for one family of tests (monotone, capped at 1); a missing p-value
    stays missing and does not count towards the family's size."""
    order = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p))
        out[i] = running
    return out


def with_holm(family: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each comparison of a family of claims with ``holm_p``, its McNemar p adjusted over the family (in place)."""
    names = [n for n, p in family.items() if p.get("mcnemar_p") is not None]
    for name, adjusted in zip(names, holm([family[n]["mcnemar_p"] for n in names])):
        family[name]["holm_p"] = adjusted
    return family


def verdict(p: dict[str, Any]) -> str:
    """What a paired comparison supports, in words: a gain (or loss) needs the interval over seeds to exclude
    zero and, where the comparison is one of a family (``holm_p``), the family-corrected McNemar p < 0.05."""
    if p["n_seeds"] < 2:
        return "one seed: no interval, no claim"
    corrected = p.get("holm_p")
    if (p["gain"] or p["loss"]) and corrected is not None and corrected >= ALPHA:
        return f"no claim (Holm-corrected McNemar p = {corrected:.2g})"
    if p["gain"]:
        return "gain"
    if p["loss"]:
        return "loss"
    low, high = p["delta_ci95"]
    return "no claim (no spread over seeds)" if high == low else "no claim (the interval holds 0)"


def describe(p: dict[str, Any], mcnemar: bool = True) -> str:
    """Δ mean [95 % interval] (and McNemar p), as one phrase."""
    low, high = p["delta_ci95"]
    ci = f" [{low:+.2f}, {high:+.2f}]" if p["n_seeds"] > 1 else ""
    mcnemar_text = f", McNemar p = {p['mcnemar_p']:.2g}" if mcnemar and p.get("mcnemar_p") is not None else ""
    if mcnemar_text and p.get("holm_p") is not None:
        mcnemar_text += f" (Holm {p['holm_p']:.2g})"
    return f"{p['delta_mean']:+.2f}{ci}{mcnemar_text}"
