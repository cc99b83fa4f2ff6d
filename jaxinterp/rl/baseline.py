"""OpenAI's published PPO baseline on Heist (easy mode, unbounded levels, 3 seeds, openai/train-procgen): the curve
that jaxinterp's default agent is trained against and drawn beside."""

from __future__ import annotations

from importlib.resources import files
from typing import NamedTuple

import numpy as np

__all__ = ["BASELINE_FILE", "BaselineCurve", "baseline_curve", "has_baseline"]

BASELINE_FILE = "data/train_procgen_heist_easy.csv"
"""Inside `jaxinterp.rl`; the file's header says where its numbers come from and how they were smoothed."""


class BaselineCurve(NamedTuple):
    """Per logged update: frames, mean episode return (mean and std over the seeds) and policy entropy (nats)."""

    frames: np.ndarray
    return_mean: np.ndarray
    return_std: np.ndarray
    entropy_mean: np.ndarray

    @property
    def success_mean(self) -> np.ndarray:
        """Heist's only reward is +10 for the gem, so the success rate is the return over 10."""
        return self.return_mean / 10.0


def baseline_curve() -> BaselineCurve:
    lines = [
        s for s in files("jaxinterp.rl").joinpath(BASELINE_FILE).read_text().splitlines() if s[:1] != "#"
    ]
    columns = lines[0].split(",")
    table = np.loadtxt(lines[1:], delimiter=",", dtype=np.float64, ndmin=2)
    return BaselineCurve(*(table[:, columns.index(name)] for name in BaselineCurve._fields))


def has_baseline(ppo: dict) -> bool:
    """Whether a run's PPO settings play the game the baseline played (Heist easy mode, unbounded levels)."""
    return ppo.get("distribution_mode") == "easy" and ppo.get("num_levels") == 0
