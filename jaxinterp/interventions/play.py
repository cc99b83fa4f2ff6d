"""Playing Heist under many edits at once: environment i plays level ``levels[i]`` under edit ``which[i]``, all in
one vectorized batch, each level cloned from procgen's serialized state so that every edit sees the same levels.

One jitted step computes the edited policy and the clean one on the same frames (the KL between them, per step),
samples actions with keys that depend on the level and the step only (an empty edit replays the clean agent exactly),
and the host reads each game's entities to follow the agent's path and what it reaches first.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp import progress
from jaxinterp.envs.ground_truth import parse_state, read_entities, to_pixels
from jaxinterp.envs.heist import HeistConfig, HeistEnv
from jaxinterp.envs.stepping import step_policy
from jaxinterp.errors import JaxinterpError
from jaxinterp.interventions.edits import EditArrays, Slot, apply_slot
from jaxinterp.models.agent import CPU_PASS_SIZE, Agent, pass_size, preprocess

__all__ = [
    "EVENTS",
    "MAX_STEPS",
    "EpisodeLog",
    "Levels",
    "Play",
    "Policy",
    "edited_policy",
    "make_levels",
    "play",
    "play_levels",
]

MAX_STEPS = 1000
"""Heist ends an episode after 1000 steps (procgen's timeout), so every episode is played to its end."""

EVENTS = ("key_blue", "key_green", "key_red", "lock_blue", "lock_green", "lock_red", "gem")
"""What the agent can reach, in the order of `Play.reached` (a key picked up, a lock opened, the gem)."""

_PLAYER, _LOCK, _KEY, _GEM = 0, 1, 2, 9
_COLOURS = ("blue", "green", "red")
_MIN_BUCKET = CPU_PASS_SIZE
"""Running environments are passed to the network in batches of a power of two (at least one CPU pass), so a
handful of programs are compiled while the batch empties (failing episodes run to the timeout long after most have
ended)."""


class Levels(NamedTuple):
    """Start states of Heist levels, to clone into any number of environments."""

    seeds: np.ndarray  # (L,) procgen level seeds
    states: tuple[bytes, ...]  # procgen's serialized game at each level's first step
    config: HeistConfig  # how they were drawn (distribution mode)


def make_levels(config: HeistConfig) -> Levels:
    """``config.num_envs`` levels as ``config`` draws them (e.g. `jaxinterp.rl.evaluate.level_config`)."""
    env = HeistEnv(config)
    state = env.get_state()
    env.close()
    return Levels(state.level_seed.copy(), state.procgen, config)


class Play(NamedTuple):
    """Each environment's one episode: its outcome, path and divergence from the clean policy, per environment."""

    success: np.ndarray  # (N,) bool
    length: np.ndarray  # (N,) steps
    reached: np.ndarray  # (N, len(EVENTS)) step at which each thing was reached, -1 if never
    path: (
        np.ndarray
    )  # (N, MAX_STEPS + 1, 2) the agent's pixel position (column, row) per step, NaN after the end
    kl: np.ndarray  # (N, MAX_STEPS) KL(clean || edited) of the policies per step, NaN after the end
    actions: np.ndarray  # (N, MAX_STEPS) int8, -1 after the end
    first_frames: np.ndarray  # (N, 64, 64, 3) each environment's first observation
    frames: np.ndarray  # (len(keep_frames), T + 1, 64, 64, 3) every observation of the environments asked for

    def first_reached(self) -> np.ndarray:
        """(N,) index into `EVENTS` of what each episode reached first (-1: nothing)."""
        steps = np.where(self.reached < 0, np.iinfo(np.int64).max, self.reached)
        first = steps.argmin(1)
        return np.where((self.reached >= 0).any(1), first, -1)


@functools.partial(jax.jit, static_argnames=("slots", "greedy"))
def _policy(agent: Agent, obs, arrays, which, level, step, key, *, slots: tuple[Slot, ...], greedy: bool):
    """Edited actions and KL(clean || edited) for a batch of frames (a multiple of `pass_size` rows, run pass by
    pass: XLA:CPU's convolutions are fastest on batches of 32); ``which``/``level`` per row."""
    rows = pass_size(obs.shape[0])

    def one_pass(inputs):
        i, obs, which, level = inputs
        images = preprocess(obs)
        edit_key = jax.random.fold_in(jax.random.fold_in(key, -1 - step), i)

        def edit_layer(layer):
            def edit(acts):
                for j, (slot, arr) in enumerate(zip(slots, arrays, strict=True)):
                    if slot.layer == layer:
                        acts = apply_slot(slot, arr, which, acts, jax.random.fold_in(edit_key, j))
                return acts

            return edit

        perturb = {slot.layer: edit_layer(slot.layer) for slot in slots}
        edited = agent.forward(agent.params, images, perturb)[agent.arch.logits]
        clean = agent.forward(agent.params, images)[agent.arch.logits] if slots else edited
        lp, lq = jax.nn.log_softmax(clean), jax.nn.log_softmax(edited)
        kl = jnp.sum(jnp.exp(lp) * (lp - lq), -1)
        keys = jax.vmap(lambda lv: jax.random.fold_in(jax.random.fold_in(key, lv), step))(level)
        actions = edited.argmax(-1) if greedy else jax.vmap(jax.random.categorical)(keys, edited)
        return actions.astype(jnp.int32), kl

    split = (
        jnp.arange(obs.shape[0] // rows),
        *(x.reshape(-1, rows, *x.shape[1:]) for x in (obs, which, level)),
    )
    actions, kl = jax.lax.map(one_pass, split)
    return actions.reshape(-1), kl.reshape(-1)


def _things(entities) -> tuple[tuple[float, float], np.ndarray]:
    """The agent's world position, and how many of each of `EVENTS` are on the board (keys and locks by colour;
    the gem's count stays 0: reaching it ends the episode, which `play` sees from procgen's success flag)."""
    count = np.zeros(len(EVENTS), np.int64)
    agent_xy = (np.nan, np.nan)
    for e in entities:
        if e.type == _PLAYER:
            agent_xy = (e.x, e.y)
        elif e.type in (_KEY, _LOCK) and e.theme < len(_COLOURS):
            count[(len(_COLOURS) if e.type == _LOCK else 0) + e.theme] += 1
    return agent_xy, count


Policy = Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]
"""``policy(obs, envs, t) -> (actions, kl)`` for the frames of the environments ``envs`` at step ``t``."""


def edited_policy(
    agent: Agent,
    edits: dict[Slot, EditArrays],
    which: np.ndarray,
    level_of: np.ndarray,
    *,
    seed: int = 0,
    greedy: bool = False,
) -> Policy:
    """The `Policy` of env i playing under edit row ``which[i]`` of ``edits`` (from `compile_edits`); its actions
    are drawn with keys of (``seed``, level, step), so two envs on one level under no edit act alike."""
    which, level_of = np.asarray(which, np.int32), np.asarray(level_of, np.int32)
    if which.shape != level_of.shape:
        raise JaxinterpError("`which` and `level_of` must have the same length (one entry per environment)")
    slots = tuple(edits)
    arrays = tuple(edits[s] for s in slots)
    key = jax.random.key(seed)

    def policy(obs, envs, t):
        # Padded to a power of two with repeats of itself: a handful of compiled shapes as the batch empties.
        rows = np.resize(np.arange(len(envs)), max(_MIN_BUCKET, 1 << (len(envs) - 1).bit_length()))
        ids = envs[rows]
        act, kl = _policy(
            agent, obs[rows], arrays, which[ids], level_of[ids], t, key, slots=slots, greedy=greedy
        )
        return np.asarray(act)[: len(envs)], np.asarray(kl)[: len(envs)]

    return policy


def play(
    agent: Agent,
    levels: Levels,
    edits: dict[Slot, EditArrays],
    which: np.ndarray,
    level_of: np.ndarray,
    *,
    seed: int = 0,
    greedy: bool = False,
    **options,
) -> Play:
    """Play one episode in each of ``len(which)`` environments: env i plays level ``level_of[i]`` (an index into
    ``levels``) under edit row ``which[i]`` of ``edits`` (from `compile_edits`); ``options`` as `play_levels`."""
    policy = edited_policy(agent, edits, which, level_of, seed=seed, greedy=greedy)
    return play_levels(policy, levels, level_of, **options)


def play_levels(
    policy: Policy,
    levels: Levels,
    level_of: np.ndarray,
    *,
    max_steps: int = MAX_STEPS,
    keep_frames: Sequence[int] = (),
    progress_bar: bool = True,
) -> Play:
    """Env i plays level ``level_of[i]`` with ``policy`` until every env has ended its first episode.

    Only the environments still playing are passed to ``policy``. ``max_steps`` below Heist's own timeout cuts
    episodes short (quick looks, tests): they count as failures of that length. The observations of the
    environments ``keep_frames`` are kept (for GIFs; the last one repeats after the end)."""
    level_of = np.asarray(level_of, np.int32)
    if level_of.ndim != 1:
        raise JaxinterpError("`level_of` must be 1-d: one level index per environment")
    env, obs = _start(levels, level_of)
    layouts = [parse_state(s) for s in levels.states]
    log = EpisodeLog(len(level_of), layouts, level_of, obs)
    keep = np.asarray(keep_frames, np.int64)
    kept = [obs[keep]]
    log.look(env, np.arange(len(level_of)), 0)

    def still_playing(obs, t):
        running = np.flatnonzero(log.length < 0)
        actions = np.zeros(len(level_of), np.int32)
        actions[running], kl = policy(obs[running], running, t)
        return actions, (running, kl)

    with progress.bar(len(level_of), desc="episodes", unit="episode", enabled=progress_bar) as bar:
        for step in step_policy(env, still_playing, obs=obs, steps=max_steps):
            running, kl = step.output
            log.record(running, step.t, step.actions, kl, step.done, step.info["success"])
            log.look(env, running[~step.done[running]], step.t + 1)
            playing = log.length[keep] < 0
            kept.append(np.where(playing[:, None, None, None], step.next_obs[keep], kept[-1]))
            bar.update(int(step.done[running].sum()))
            if (log.length >= 0).all():
                break
    env.close()
    return log.result(max_steps)._replace(frames=np.stack(kept, 1))


def _start(levels: Levels, level_of: np.ndarray) -> tuple[HeistEnv, np.ndarray]:
    """A vectorized Heist whose env i starts level ``level_of[i]``, and its first observations."""
    c = levels.config
    env = HeistEnv(HeistConfig(len(level_of), c.distribution_mode, c.num_levels, c.start_level))
    start = env.get_state()
    env.set_state(
        start._replace(procgen=tuple(levels.states[i] for i in level_of), level_seed=levels.seeds[level_of])
    )
    return env, env.observe()


class EpisodeLog:
    """Per-environment bookkeeping of one episode each (host side): outcome, path, what was reached, KL, actions."""

    def __init__(self, n: int, layouts, level_of: np.ndarray, first_frames: np.ndarray):
        self.layouts, self.level_of, self.first_frames = layouts, level_of, first_frames
        self.start_things = np.stack([_things(layout.entities)[1] for layout in layouts])
        self.length = np.full(n, -1, np.int64)
        self.success = np.zeros(n, bool)
        self.reached = np.full((n, len(EVENTS)), -1, np.int64)
        self.path = np.full((n, MAX_STEPS + 1, 2), np.nan, np.float32)
        self.kl = np.full((n, MAX_STEPS), np.nan, np.float32)
        self.actions = np.full((n, MAX_STEPS), -1, np.int8)

    def look(self, env: HeistEnv, envs: np.ndarray, t: int) -> None:
        """Read the entities of ``envs`` (still in their first episode) at step ``t``."""
        if not len(envs):
            return
        states = env.get_state().procgen
        for i in envs:
            level = self.level_of[i]
            (x, y), count = _things(read_entities(states[i]))
            self.path[i, t] = to_pixels(self.layouts[level], x, y)
            new = (count < self.start_things[level]) & (self.reached[i] < 0)
            self.reached[i, new] = t

    def record(self, running, t, actions, kl, done, success) -> None:
        self.actions[running, t] = actions[running]
        self.kl[running, t] = kl
        ended = running[done[running]]
        self.length[ended] = t + 1
        self.success[ended] = success[ended]
        gem = ended[success[ended]]
        self.reached[gem, EVENTS.index("gem")] = t + 1

    def result(self, max_steps: int) -> Play:
        self.length[self.length < 0] = max_steps
        return Play(
            self.success, self.length, self.reached, self.path, self.kl, self.actions, self.first_frames, None
        )
