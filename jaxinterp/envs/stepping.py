"""Stepping Heist environments with a policy: every loop of jaxinterp that plays Heist is this one generator.

`step_policy` calls ``policy(obs, t)`` on every env's frame, steps the envs with its actions and yields a `Step`: what
the policy saw and did, what the envs answered and the episodes that ended. The caller folds the steps (a PPO
trajectory, a dataset's rows, evaluation statistics) and stops when it has enough; nothing is stepped ahead of it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxinterp.envs.heist import Episodes, HeistEnv

__all__ = ["Step", "StepPolicy", "keyed", "step_policy"]

StepPolicy = Callable[[np.ndarray, int], tuple[Any, Any]]
"""``policy(obs, t) -> (actions, output)``: actions (N,) ints for the uint8 frames (N, 64, 64, 3) of every env at the
envs' step ``t`` (`HeistEnv.steps`), and any other output (activations, log-probabilities, values; None)."""


class Step(NamedTuple):
    """One step of every env: the frames the policy saw (and the episodes they belong to), what it did, and what the
    envs answered."""

    t: int  # the envs' step count before this step (`HeistEnv.steps`)
    obs: np.ndarray  # uint8 (N, 64, 64, 3): what the policy saw
    episode_id: np.ndarray  # int64 (N,): the episode each frame of ``obs`` belongs to
    level_seed: np.ndarray  # int64 (N,)
    objects: np.ndarray | None  # uint8 (N, 64, 64) ground-truth object maps of ``obs``, when asked for
    actions: np.ndarray  # (N,) the policy's actions, as numpy
    output: Any  # the policy's other output
    reward: np.ndarray  # float32 (N,)
    done: np.ndarray  # bool (N,): the episode ended with this step (``next_obs`` starts a new one there)
    info: dict[
        str, np.ndarray
    ]  # `HeistEnv.step`'s info: ``success`` of the ended episodes, ids of ``next_obs``
    next_obs: np.ndarray  # uint8 (N, 64, 64, 3)
    episodes: Episodes  # the episodes that ended with this step, in env order


def step_policy(
    env: HeistEnv,
    policy: StepPolicy,
    *,
    obs: np.ndarray | None = None,
    steps: int | None = None,
    objects: bool = False,
) -> Iterator[Step]:
    """Step ``env`` with ``policy`` and yield each `Step`, ``steps`` times or (None) until the caller stops.

    ``obs`` is the envs' current frames (default `HeistEnv.observe`; a restored checkpoint passes its own).
    ``objects`` reads the object maps of every frame before it is stepped (~0.3 ms per env). The ended episodes are
    popped from ``env`` as they end and handed over in `Step.episodes`. A policy for a subset of the envs (those still
    playing, or each env under its own edit) picks its rows from ``obs`` itself and returns actions for all.
    """
    obs = env.observe() if obs is None else obs
    for _ in itertools.repeat(None) if steps is None else range(steps):
        t, episode_id, level_seed = env.steps, env.episode_id.copy(), env.level_seed.copy()
        maps = env.object_maps() if objects else None
        actions, output = policy(obs, t)
        actions = np.asarray(actions)
        next_obs, reward, done, info = env.step(actions)
        episodes = env.pop_episodes()
        yield Step(
            t, obs, episode_id, level_seed, maps, actions, output, reward, done, info, next_obs, episodes
        )
        obs = next_obs


def keyed(policy: Callable[[jax.Array, np.ndarray], tuple[Any, Any]], key: jax.Array) -> StepPolicy:
    """A `StepPolicy` from a policy that takes a key (`jaxinterp.envs.rollout.Policy`): step ``t`` gets
    ``fold_in(key, t)``, so a run resumed at step ``t`` draws what an uninterrupted one would."""
    return lambda obs, t: policy(jax.random.fold_in(key, t), obs)
