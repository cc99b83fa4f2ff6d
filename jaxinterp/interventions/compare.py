"""What an edit changed, measured against the clean agent on the same levels: paired differences with bootstrap
confidence intervals, an exact McNemar test for success and a sign-flip permutation test for episode length.

Pairing by level removes the level-to-level variance (some levels are hard for every policy), which is most of it.
"""

from __future__ import annotations

import math

import numpy as np

from jaxinterp.interventions.play import EVENTS, Play

__all__ = ["BOOTSTRAP", "compare", "mcnemar_p", "paired_ci", "permutation_p"]

BOOTSTRAP = 2000
"""Resamples of the levels behind each 95% interval and permutation p-value (their Monte-Carlo error at p = 0.05
is about 0.005)."""


def mcnemar_p(before: np.ndarray, after: np.ndarray) -> float:
    """Exact two-sided McNemar p-value of paired booleans: the discordant pairs against a fair coin."""
    gained = int(np.sum(~before & after))
    lost = int(np.sum(before & ~after))
    n = gained + lost
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(gained, lost) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_ci(diff: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean of paired differences (resampling levels)."""
    means = diff[rng.integers(0, len(diff), (BOOTSTRAP, len(diff)))].mean(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def permutation_p(diff: np.ndarray, rng: np.random.Generator) -> float:
    """Two-sided sign-flip permutation p-value that paired differences have mean zero."""
    observed = abs(diff.mean())
    flips = rng.choice([-1.0, 1.0], (BOOTSTRAP, len(diff)))
    return float((np.sum(np.abs((flips * diff).mean(1)) >= observed - 1e-12) + 1) / (BOOTSTRAP + 1))


def _first_counts(first: np.ndarray) -> dict[str, float]:
    """Fraction of episodes whose first reached thing is each of `EVENTS` (or nothing)."""
    names = [*EVENTS, "nothing"]
    return {
        name: float(np.mean(np.where(first < 0, len(EVENTS), first) == i)) for i, name in enumerate(names)
    }


def compare(
    result: Play, which: np.ndarray, level_of: np.ndarray, names: list[str], *, clean: int = 0, seed=0
):
    """One row per edit (index into ``names``): success, length, what is reached first and the policy KL, each
    against the clean row ``clean`` on the same levels. Every edit must have played every level once."""
    rng = np.random.default_rng(seed)
    first = result.first_reached()
    order = {e: np.argsort(level_of[which == e]) for e in range(len(names))}

    def per_level(values, e):
        return values[which == e][order[e]]

    base_success, base_length, base_first = (
        per_level(x, clean) for x in (result.success, result.length, first)
    )
    rows = []
    for e, name in enumerate(names):
        success, length, reached = (per_level(x, e) for x in (result.success, result.length, first))
        if len(success) != len(base_success):
            raise ValueError(f"edit {name!r} played {len(success)} levels, clean {len(base_success)}")
        d_success = success.astype(float) - base_success
        d_length = length.astype(float) - base_length
        kl = per_level(np.nanmean(result.kl, 1), e)
        rows.append(
            {
                "edit": name,
                "levels": len(success),
                "success": float(success.mean()),
                "success_change": float(d_success.mean()),
                "success_ci": paired_ci(d_success, rng),
                "success_p": mcnemar_p(base_success, success),
                "length": float(length.mean()),
                "length_change": float(d_length.mean()),
                "length_ci": paired_ci(d_length, rng),
                "length_p": permutation_p(d_length, rng) if e != clean else 1.0,
                "first_reached": _first_counts(reached),
                "first_changed": float(np.mean(reached != base_first)),
                "kl": float(np.mean(kl)),
            }
        )
    return rows
