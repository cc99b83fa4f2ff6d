"""Vectorized Procgen Heist with per-episode bookkeeping, shared by rollouts, PPO training and evaluation.

Procgen steps on the host in numpy; only policies are jitted. Unseen levels are just another
`start_level`/`num_levels` range.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from jaxinterp.errors import JaxinterpError

__all__ = [
    "DISTRIBUTION_MODES",
    "MOVE_OF_ACTION",
    "NUM_ACTIONS",
    "SUCCESS_REWARD",
    "EpisodeSummary",
    "Episodes",
    "HeistConfig",
    "HeistEnv",
    "HeistState",
]

NUM_ACTIONS = 15
MOVE_OF_ACTION = (0, 1, 2, 3, 4, 5, 6, 7, 8, 4, 4, 4, 4, 4, 4)
"""What each of the 15 actions does in Heist: actions 0-8 are the eight moves and standing still (4); Heist ignores
the special actions 9-14, so they stand still too (procgen's ``BasicAbstractGame``). Seven actions, one move."""
# Heist pays exactly this once, when the agent reaches the gem; nothing else is rewarded.
SUCCESS_REWARD = 10.0
DISTRIBUTION_MODES = ("easy", "hard")
# procgen passes the seed to C as a signed 32-bit int and rejects anything larger.
_MAX_SEED = 2**31 - 1


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise JaxinterpError(f"HeistConfig.{name} must be an int, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise JaxinterpError(f"HeistConfig.{name} (={value}) must be {bound}")


@dataclass(frozen=True)
class HeistConfig:
    """Which Heist levels to play and how many copies at once.

    `num_levels=0` means unbounded: every episode draws a fresh level from `start_level` on.
    `seed` seeds procgen's level sampler, so the same config replays the same levels.
    """

    num_envs: int = 64
    distribution_mode: str = "easy"
    num_levels: int = 0
    start_level: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        _check_int("num_envs", self.num_envs, 1)
        if self.distribution_mode not in DISTRIBUTION_MODES:
            raise JaxinterpError(
                f"HeistConfig.distribution_mode (={self.distribution_mode!r}) must be one of {DISTRIBUTION_MODES}"
            )
        _check_int("num_levels", self.num_levels, 0)
        _check_int("start_level", self.start_level, 0, _MAX_SEED)
        _check_int("seed", self.seed, 0, _MAX_SEED)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready fields."""
        return {
            k: (v.item() if isinstance(v, np.generic) else v) for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, fields: Mapping[str, Any]) -> HeistConfig:
        """Inverse of `to_dict`; unknown keys are an error rather than silently dropped."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise JaxinterpError(
                f"unknown HeistConfig fields {unknown}; expected a subset of {sorted(known)}"
            )
        return cls(**fields)


class Episodes(NamedTuple):
    """Per-episode statistics as parallel arrays, one entry per episode.

    `first_step` is the env step at which the episode began; `complete` is False only for an episode
    still running when the record ends (a dataset's last steps).
    """

    episode_id: np.ndarray  # int64
    env: np.ndarray  # int64, index of the vectorized env that played it
    level_seed: np.ndarray  # int64
    first_step: np.ndarray  # int64
    length: np.ndarray  # int64
    episode_return: np.ndarray  # float32
    success: np.ndarray  # bool
    complete: np.ndarray  # bool

    @classmethod
    def empty(cls) -> Episodes:
        return cls(*(np.zeros(0, dtype) for dtype in _EPISODE_DTYPES))

    @classmethod
    def concatenate(cls, parts: list[Episodes]) -> Episodes:
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate(column) for column in zip(*parts, strict=True)))

    def summary(self) -> EpisodeSummary:
        """Mean return, success rate and mean length over the complete episodes (NaN when there are none)."""
        done = self.complete
        n = int(done.sum())
        if n == 0:
            return EpisodeSummary(0, math.nan, math.nan, math.nan)
        return EpisodeSummary(
            num_episodes=n,
            mean_return=float(self.episode_return[done].mean()),
            success_rate=float(self.success[done].mean()),
            mean_length=float(self.length[done].mean()),
        )


_EPISODE_DTYPES = (np.int64, np.int64, np.int64, np.int64, np.int64, np.float32, bool, bool)


class EpisodeSummary(NamedTuple):
    """Aggregate over complete episodes."""

    num_episodes: int
    mean_return: float
    success_rate: float
    mean_length: float

    def __str__(self) -> str:
        return (
            f"{self.num_episodes} complete episodes, mean return {self.mean_return:.2f}, "
            f"success {self.success_rate:.1%}, mean length {self.mean_length:.1f}"
        )


class HeistState(NamedTuple):
    """Everything needed to continue a `HeistEnv` exactly where it was (episodes not yet popped excluded)."""

    procgen: tuple[bytes, ...]  # procgen's own serialized state per env (level, RNG, agent position)
    steps: int
    next_episode_id: int
    episode_id: np.ndarray
    level_seed: np.ndarray
    first_step: np.ndarray
    episode_return: np.ndarray
    episode_length: np.ndarray

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flat numpy arrays, for `np.savez` without pickle."""
        sizes = np.array([len(s) for s in self.procgen], np.int64)
        return {
            "procgen_bytes": np.frombuffer(b"".join(self.procgen), np.uint8),
            "procgen_sizes": sizes,
            "steps": np.int64(self.steps),
            "next_episode_id": np.int64(self.next_episode_id),
            "episode_id": self.episode_id,
            "level_seed": self.level_seed,
            "first_step": self.first_step,
            "episode_return": self.episode_return,
            "episode_length": self.episode_length,
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> HeistState:
        """Inverse of `to_arrays`."""
        blob = np.asarray(arrays["procgen_bytes"], np.uint8).tobytes()
        ends = np.cumsum(arrays["procgen_sizes"])
        starts = ends - arrays["procgen_sizes"]
        return cls(
            procgen=tuple(blob[s:e] for s, e in zip(starts, ends, strict=True)),
            steps=int(arrays["steps"]),
            next_episode_id=int(arrays["next_episode_id"]),
            **{k: np.array(arrays[k]) for k in cls._fields[3:]},
        )


class HeistEnv:
    """`config.num_envs` Heist games stepped together, tracking each one's episode id, return and length.

    Episode ids are unique within this env's lifetime: env `i` starts episode `i`, and every new episode
    takes the next unused id (in env order), so they are reproducible from the config alone.
    """

    def __init__(self, config: HeistConfig):
        self.config = config
        self.num_envs = config.num_envs
        self.num_actions = NUM_ACTIONS
        self.reset()

    def reset(self) -> np.ndarray:
        """Start every env afresh from `config.seed` and forget all episode bookkeeping; returns the obs."""
        # Imported here so that importing jaxinterp does not load procgen's native library.
        from procgen import ProcgenGym3Env

        c = self.config
        self._env = ProcgenGym3Env(
            num=c.num_envs,
            env_name="heist",
            distribution_mode=c.distribution_mode,
            num_levels=c.num_levels,
            start_level=c.start_level,
            rand_seed=c.seed,
        )
        n = self.num_envs
        obs = self.observe()
        self.steps = 0
        self._next_episode_id = n
        self.episode_id = np.arange(n, dtype=np.int64)
        self.level_seed = self._info_column("level_seed")
        self._first_step = np.zeros(n, np.int64)
        self._return = np.zeros(n, np.float32)
        self._length = np.zeros(n, np.int64)
        self._finished: list[Episodes] = []
        return obs

    def observe(self) -> np.ndarray:
        """The current observations, uint8 (num_envs, 64, 64, 3); a copy the caller may keep."""
        _, obs, _ = self._env.observe()
        return obs["rgb"]  # gym3 hands over a copy (its `reuse_arrays` is off)

    def object_maps(self) -> np.ndarray:
        """uint8 (num_envs, 64, 64): which game object each pixel of the current observations shows, as indices
        into `jaxinterp.envs.ground_truth.OBJECT_CLASSES` (read from procgen's game state, ~0.3 ms per env)."""
        from jaxinterp.envs.ground_truth import object_maps

        return object_maps(self.game_states(range(self.num_envs)))

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Apply one action per env.

        Returns `(obs, reward, done, info)`: `obs` is the next observation (already the first of a new
        episode where `done`), `reward` float32 is what the actions earned, `done` marks envs whose episode
        ended with this step. `info` has, per env, `success` (the ended episode reached the gem) and
        `episode_id` / `level_seed` of the episode `obs` belongs to.
        """
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,) or not np.issubdtype(actions.dtype, np.integer):
            raise JaxinterpError(
                f"actions must be integers of shape ({self.num_envs},), got {actions.dtype} {actions.shape}"
            )
        if actions.size and (actions.min() < 0 or actions.max() >= NUM_ACTIONS):
            raise JaxinterpError(f"actions must be in [0, {NUM_ACTIONS}), got values {np.unique(actions)}")
        self._env.act(actions.astype(np.int32))
        reward, obs, first = self._env.observe()
        reward = np.asarray(reward, np.float32).copy()
        done = np.asarray(first, bool).copy()
        self.steps += 1
        self._return += reward
        self._length += 1
        success = done & (self._info_column("prev_level_complete") == 1)
        if done.any():
            self._finish(done, success)
        info = {
            "success": success,
            "episode_id": self.episode_id.copy(),
            "level_seed": self.level_seed.copy(),
        }
        return obs["rgb"], reward, done, info

    def _finish(self, done: np.ndarray, success: np.ndarray) -> None:
        envs = np.flatnonzero(done)
        self._finished.append(
            Episodes(
                episode_id=self.episode_id[envs].copy(),
                env=envs.astype(np.int64),
                level_seed=self.level_seed[envs].copy(),
                first_step=self._first_step[envs].copy(),
                length=self._length[envs].copy(),
                episode_return=self._return[envs].copy(),
                success=success[envs],
                complete=np.ones(len(envs), bool),
            )
        )
        new_ids = self._next_episode_id + np.arange(len(envs), dtype=np.int64)
        self._next_episode_id += len(envs)
        self.episode_id[envs] = new_ids
        self.level_seed[envs] = self._info_column("level_seed")[envs]
        self._first_step[envs] = self.steps
        self._return[envs] = 0.0
        self._length[envs] = 0

    def pop_episodes(self) -> Episodes:
        """Episodes that ended since the last call, in the order they ended."""
        finished, self._finished = self._finished, []
        return Episodes.concatenate(finished)

    def get_state(self) -> HeistState:
        """A snapshot that `set_state` restores exactly, for resumable rollouts and checkpoints."""
        return HeistState(
            procgen=tuple(self.game_states(range(self.num_envs))),
            steps=self.steps,
            next_episode_id=self._next_episode_id,
            episode_id=self.episode_id.copy(),
            level_seed=self.level_seed.copy(),
            first_step=self._first_step.copy(),
            episode_return=self._return.copy(),
            episode_length=self._length.copy(),
        )

    def keep_only(self, envs) -> HeistEnv:
        """A new env that continues only the environments ``envs`` (in that order) exactly where they are, and
        closes this one: procgen steps every environment it holds, so dropping finished ones saves their steps."""
        envs = np.asarray(envs, np.int64)
        state = HeistState(
            procgen=tuple(self.game_states(envs)),
            steps=self.steps,
            next_episode_id=self._next_episode_id,
            episode_id=self.episode_id[envs],
            level_seed=self.level_seed[envs],
            first_step=self._first_step[envs],
            episode_return=self._return[envs],
            episode_length=self._length[envs],
        )
        kept = HeistEnv(dataclasses.replace(self.config, num_envs=len(envs)))
        kept.set_state(state)
        self.close()
        return kept

    def game_states(self, envs) -> list[bytes]:
        """procgen's serialized game of the environments ``envs`` only (procgen's own `get_state` serializes all)."""
        from procgen.env import MAX_STATE_SIZE

        buf = self._env._ffi.new(f"char[{MAX_STATE_SIZE}]")
        return [
            bytes(self._env._ffi.buffer(buf, self._env.call_c_func("get_state", int(i), buf, MAX_STATE_SIZE)))
            for i in envs
        ]

    def set_state(self, state: HeistState) -> None:
        """Continue from a `get_state` snapshot taken from an env with the same config."""
        if len(state.procgen) != self.num_envs:
            raise JaxinterpError(
                f"state holds {len(state.procgen)} envs but this HeistEnv has {self.num_envs}; "
                "restore it into an env made with the same HeistConfig"
            )
        self._env.set_state(list(state.procgen))
        self.steps = state.steps
        self._next_episode_id = state.next_episode_id
        self.episode_id = state.episode_id.astype(np.int64)
        self.level_seed = state.level_seed.astype(np.int64)
        self._first_step = state.first_step.astype(np.int64)
        self._return = state.episode_return.astype(np.float32)
        self._length = state.episode_length.astype(np.int64)
        self._finished = []

    def close(self) -> None:
        self._env.close()

    def _info_column(self, key: str) -> np.ndarray:
        return np.array([info[key] for info in self._env.get_info()], np.int64)
