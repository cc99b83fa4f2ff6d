"""Evaluate a policy on Heist: mean return with a 95% interval and success rate, beside the random policy on the
same levels in the same run.

Each env plays a fixed number of episodes and only those count, so short (successful) episodes are not
over-represented, as they would be by stopping at the first N episodes to finish.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import numpy as np

from jaxinterp.envs.heist import HeistConfig, HeistEnv
from jaxinterp.envs.rollout import Policy, agent_policy, random_policy
from jaxinterp.envs.stepping import keyed, step_policy
from jaxinterp.errors import JaxinterpError
from jaxinterp.models.agent import Agent
from jaxinterp.progress import bar as progress_bar

__all__ = [
    "UNSEEN_NUM_LEVELS",
    "UNSEEN_START_LEVEL",
    "Evaluation",
    "evaluate",
    "level_config",
    "run_episodes",
]

# "unseen" levels: a fixed block of level seeds far from procgen's usual training ranges (start_level 0). An agent
# trained on unbounded levels draws from all 2^31 seeds, so it has met a vanishing fraction of these.
UNSEEN_START_LEVEL = 1_000_000_000
UNSEEN_NUM_LEVELS = 100_000
Z_95 = 1.96


class Evaluation(NamedTuple):
    episodes: int
    mean_return: float
    return_ci95: float  # half-width of the 95% interval of the mean return
    success_rate: float
    success_ci95: float
    mean_length: float

    def __str__(self) -> str:
        return (
            f"return {self.mean_return:.2f} ± {self.return_ci95:.2f}, success {self.success_rate:.1%} "
            f"± {self.success_ci95:.1%} ({self.episodes} episodes, mean length {self.mean_length:.0f})"
        )

    def to_dict(self) -> dict:
        return self._asdict()


def level_config(levels: str, *, num_envs: int, seed: int, distribution_mode: str = "easy") -> HeistConfig:
    """Heist levels by name: ``unseen`` (a held-out block) or ``train`` (procgen's unbounded default)."""
    if levels == "unseen":
        return HeistConfig(num_envs, distribution_mode, UNSEEN_NUM_LEVELS, UNSEEN_START_LEVEL, seed)
    if levels == "train":
        return HeistConfig(num_envs, distribution_mode, 0, 0, seed)
    raise JaxinterpError(f"unknown level set {levels!r}; use 'unseen' or 'train'")


def run_episodes(
    policy: Policy,
    config: HeistConfig,
    episodes: int,
    *,
    seed: int,
    progress: bool = True,
    desc: str = "evaluate",
) -> Evaluation:
    """Play until every env has finished its share of ``episodes``; statistics over exactly ``episodes``."""
    if episodes < 1:
        raise JaxinterpError(f"--episodes must be >= 1, got {episodes}")
    per_env = math.ceil(episodes / config.num_envs)
    env = HeistEnv(config)
    # Each env's first `per_env` episodes, as (return, success, length) in the order it played them.
    played: list[list[tuple[float, bool, int]]] = [[] for _ in range(config.num_envs)]
    with progress_bar(per_env * config.num_envs, desc=desc, unit="episode", enabled=progress) as bar:
        for step in step_policy(env, keyed(policy, jax.random.key(seed))):
            ended = step.episodes
            for i, r, s, n in zip(ended.env, ended.episode_return, ended.success, ended.length, strict=True):
                if len(played[i]) < per_env:
                    played[i].append((float(r), bool(s), int(n)))
                    bar.update(1)
            if all(len(p) == per_env for p in played):
                break
    env.close()
    # Exactly `episodes`: the k-th episode of every env before any env's (k+1)-th.
    order = [played[i][k] for k in range(per_env) for i in range(config.num_envs)][:episodes]
    r, s, n = (np.array(column, float) for column in zip(*order, strict=True))
    sem = lambda x: Z_95 * x.std(ddof=1) / math.sqrt(len(x)) if len(x) > 1 else float("nan")
    return Evaluation(len(r), float(r.mean()), float(sem(r)), float(s.mean()), float(sem(s)), float(n.mean()))


def evaluate(
    agent: Agent,
    *,
    episodes: int = 1000,
    levels: str = "unseen",
    seed: int = 0,
    num_envs: int = 64,
    greedy: bool = False,
    with_greedy: bool = False,
    distribution_mode: str = "easy",
    progress: bool = True,
) -> dict:
    """The agent and the random policy on the same levels: ``{"agent": Evaluation, "random": Evaluation}``, the
    agent's actions sampled from its logits (``greedy``: their argmax); ``with_greedy`` adds ``"greedy"``, the
    argmax policy on the same levels too."""
    config = level_config(
        levels, num_envs=min(num_envs, episodes), seed=seed, distribution_mode=distribution_mode
    )
    policies = {"agent": agent_policy(agent, greedy=greedy)}
    if with_greedy:
        policies["greedy"] = agent_policy(agent, greedy=True)
    policies["random"] = random_policy(agent.num_actions)
    return {
        name: run_episodes(policy, config, episodes, seed=seed, progress=progress, desc=name)
        for name, policy in policies.items()
    }
