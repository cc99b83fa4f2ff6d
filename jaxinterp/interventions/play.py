"""Playing Heist under many edits at once: environment i plays level ``levels[i]`` under edit ``which[i]``, all in
one vectorized batch, each level cloned from procgen's serialized state so that every edit sees the same levels.

Jitted steps compute the edited policy and the clean one on the same frames (the KL between them, per step),
samples actions with keys that depend on the level and the step only (an empty edit replays the clean agent exactly),
and the host reads each game's entities to follow the agent's path and what it reaches first.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp import progress
from jaxinterp.envs.ground_truth import parse_state, read_entities, to_pixels
from jaxinterp.envs.heist import MOVE_OF_ACTION, HeistConfig, HeistEnv
from jaxinterp.envs.stepping import step_policy
from jaxinterp.errors import JaxinterpError
from jaxinterp.interventions.edits import EditArrays, Slot, apply_slot
from jaxinterp.models.agent import CPU_PASS_SIZE, Agent, policy_kl, preprocess

__all__ = [
    "EVENTS",
    "MAX_STEPS",
    "RECENT_BYTES",
    "EpisodeLog",
    "Levels",
    "Play",
    "Policy",
    "Recent",
    "edited_policy",
    "head_pass",
    "make_levels",
    "play",
    "play_levels",
    "unique_rows",
]

MAX_STEPS = 1000
"""Heist ends an episode after 1000 steps (procgen's timeout), so every episode is played to its end."""

EVENTS = ("key_blue", "key_green", "key_red", "lock_blue", "lock_green", "lock_red", "gem")
"""What the agent can reach, in the order of `Play.reached` (a key picked up, a lock opened, the gem)."""

_FRAME_PASS = 8
"""Distinct frames per network pass on CPU: a pass of 8 frames costs as much per frame as one of 32 (0.36 vs 0.37 ms
to the last stage on the 2-core CPU) and pads a step's frames with fewer repeats."""

_HEAD_PASS_MAX = 128
"""Most rows per pass of the network after the edited layer on CPU (see `head_pass`); on the last stage's output
(the head is the dense layers only) passes of 128 rows took half the time of passes of 32 in a 16-level sweep."""

RECENT_BYTES = 2**30
"""Memory for what was computed from frames seen on earlier steps (see `Recent`): a frame and its activation at the
last stage take ~20 kB, so ~50,000 frames. Counted on a 64-level sweep of the last stage (165,671 distinct frames,
40,802 of them seen before): the last 25,000 frames held 34,163 of those repeats, the last 50,000 held 38,215."""

_PLAYER, _LOCK, _KEY, _GEM = 0, 1, 2, 9
_MOVES = np.array(MOVE_OF_ACTION)
_ACTIONS = 16  # more than Heist's 15 actions: a group and a move as one number
_COLOURS = ("blue", "green", "red")


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


@functools.partial(jax.jit, static_argnames=("layer",))
def _trunk(agent: Agent, obs, *, layer: str):
    """Activation ``layer`` of a batch of frames, and the clean policy's log-probabilities there."""
    out = agent.forward(agent.params, preprocess(obs))
    return out[layer], jax.nn.log_softmax(out[agent.arch.logits])


@functools.partial(jax.jit, static_argnames=("layer", "slots", "greedy"))
def _head(
    agent: Agent, acts, lp, arrays, which, level, step, chunk, key, *, layer, slots: tuple[Slot, ...], greedy
):
    """Edited actions and KL(clean || edited) from activations ``acts`` of ``layer`` (the first edited layer) and
    the clean log-probabilities ``lp``: the network from there on with the edits of row ``which``; ``level`` per row
    for the keys of the actions, ``(step, chunk)`` for those of the edits that draw (resampling)."""
    edit_key = jax.random.fold_in(jax.random.fold_in(key, -1 - step), chunk)

    def edit_layer(name):
        def edit(a):
            for j, (slot, arr) in enumerate(zip(slots, arrays, strict=True)):
                if slot.layer == name:
                    a = apply_slot(slot, arr, which, a, jax.random.fold_in(edit_key, j))
            return a

        return edit

    perturb = {name: edit_layer(name) for name in {s.layer for s in slots}}
    edited = agent.forward_from(agent.params, layer, acts, perturb)[agent.arch.logits]
    kl = policy_kl(lp, jax.nn.log_softmax(edited))
    keys = jax.vmap(lambda lv: jax.random.fold_in(jax.random.fold_in(key, lv), step))(level)
    actions = edited.argmax(-1) if greedy else jax.vmap(jax.random.categorical)(keys, edited)
    return actions.astype(jnp.int32), kl


def _chunks(idx: np.ndarray, size: int) -> np.ndarray:
    """``idx`` padded with repeats of itself and split into the batches the network runs: passes of ``size`` rows on
    CPU (one compiled shape), else one batch of a power of two (a handful of shapes as the environments finish)."""
    if jax.default_backend() == "cpu":
        return np.resize(idx, -(-len(idx) // size) * size).reshape(-1, size)
    return np.resize(idx, 1 << (len(idx) - 1).bit_length())[None]


def unique_rows(x: np.ndarray, same: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(first, inverse, hashes)`` of the distinct rows of ``x``, exactly: ``x[first][inverse] == x``, and a 64-bit
    hash of each distinct row. Rows are grouped by a multiplicative hash of their bytes and the grouping is checked
    byte for byte (a whole-row sort if a hash ever collided): far cheaper than sorting 12 kB frames. ``same``
    (labels, optional) promises that rows with one label are equal: only one row of each label is read."""
    if same is not None:
        _, label_first, label_of = np.unique(same, return_index=True, return_inverse=True)
        first, inverse, hashes = unique_rows(x[label_first])
        return label_first[first], inverse[label_of.reshape(-1)], hashes
    flat = np.ascontiguousarray(x).reshape(len(x), -1).view(np.uint8)
    flat = np.pad(flat, ((0, 0), (0, -flat.shape[1] % 8)))
    words = flat.view(np.uint64)
    multipliers = np.random.default_rng(0).integers(0, 2**63, words.shape[1], np.uint64) * 2 + 1
    hashes = (words * multipliers).sum(1)
    _, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    if not (flat[first[inverse]] == flat).all():
        _, first, inverse = np.unique(flat, axis=0, return_index=True, return_inverse=True)
    return first, inverse.reshape(-1), hashes[first]


class Recent:
    """What was computed from frames seen on earlier steps (activations, clean log-probabilities), by frame hash,
    the least recently used dropped beyond ``max_bytes``; a hit is checked byte for byte. Agents pace corridors: a
    quarter of the distinct frames of a 16-level sweep of the last stage had been seen on an earlier step."""

    def __init__(self, max_bytes: int = RECENT_BYTES):
        self.max_bytes, self.bytes, self.hits = max_bytes, 0, 0
        self._store: OrderedDict[int, tuple[np.ndarray, ...]] = OrderedDict()

    def get(self, key: int, frame: np.ndarray) -> tuple[np.ndarray, ...] | None:
        kept = self._store.get(key)
        if kept is None or not np.array_equal(kept[0], frame):
            return None
        self._store.move_to_end(key)
        self.hits += 1
        return kept[1:]

    def put(self, key: int, frame: np.ndarray, *values: np.ndarray) -> None:
        entry = tuple(a.copy() for a in (frame, *values))
        size = sum(a.nbytes for a in entry)
        if size > self.max_bytes:
            return
        old = self._store.pop(key, None)
        self.bytes += size - (sum(a.nbytes for a in old) if old else 0)
        self._store[key] = entry
        while self.bytes > self.max_bytes:
            self.bytes -= sum(a.nbytes for a in self._store.popitem(last=False)[1])


def head_pass(agent: Agent, layer: str) -> int:
    """Rows per pass of the network after ``layer``: `CPU_PASS_SIZE` times the share of the whole network's
    activations that come after it (the same working set per pass), a power of two up to `_HEAD_PASS_MAX`."""
    sizes = [int(np.prod(agent.layer_shapes[n])) for n in agent.layer_names]
    after = sum(sizes[agent.layer_names.index(layer) :])
    rows = CPU_PASS_SIZE * sum(sizes) // max(after, 1)
    return min(_HEAD_PASS_MAX, 1 << (rows.bit_length() - 1))


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


Policy = Callable[[np.ndarray, np.ndarray, int, np.ndarray | None], tuple[np.ndarray, np.ndarray]]
"""``policy(obs, envs, t, same) -> (actions, kl)`` for the frames of the environments ``envs`` at step ``t``;
``same`` (optional) labels environments known to be in one game state, so to see the same frame."""


def edited_policy(
    agent: Agent,
    edits: dict[Slot, EditArrays],
    which: np.ndarray,
    level_of: np.ndarray,
    *,
    seed: int = 0,
    greedy: bool = False,
    cache_bytes: int = RECENT_BYTES,
) -> Policy:
    """The `Policy` of env i playing under edit row ``which[i]`` of ``edits`` (from `compile_edits`); its actions
    are drawn with keys of (``seed``, level, step), so two envs on one level under no edit act alike. Activations of
    frames seen on earlier steps are kept in ``cache_bytes`` of memory (`Recent`)."""
    which, level_of = np.asarray(which, np.int32), np.asarray(level_of, np.int32)
    if which.shape != level_of.shape:
        raise JaxinterpError("`which` and `level_of` must have the same length (one entry per environment)")
    slots = tuple(edits)
    arrays = tuple(edits[s] for s in slots)
    key = jax.random.key(seed)
    edits_n, levels_n = int(which.max(initial=0)) + 1, int(level_of.max(initial=0)) + 1
    layer = min((s.layer for s in slots), key=agent.layer_names.index, default=agent.arch.logits)

    recent = Recent(cache_bytes)
    shape = agent.layer_shapes[layer]
    head_rows = head_pass(agent, layer)

    def policy(obs, envs, t, same=None):
        # Frames that several environments share (edits that have not changed the agent's course yet, or never do)
        # pass through the network before `layer` once, or not at all if seen on an earlier step; the rest of it
        # runs once per distinct (frame, edit, level).
        frame, frame_of, hashes = unique_rows(obs, same)
        rows = np.stack([frame_of, which[envs], level_of[envs]], 1).astype(np.int64)
        keys = (rows[:, 0] * edits_n + rows[:, 1]) * levels_n + rows[:, 2]
        _, pair, pair_of = np.unique(keys, return_index=True, return_inverse=True)
        acts = np.empty((len(frame), *shape), np.float32)
        clean = np.empty((len(frame), agent.num_actions), np.float32)  # log-probabilities
        seen = [recent.get(int(h), obs[f]) for h, f in zip(hashes, frame, strict=True)]
        new = np.array([j for j, a in enumerate(seen) if a is None], np.int64)
        for j, a in enumerate(seen):
            if a is not None:
                acts[j], clean[j] = a
        if len(new):
            computed = [_trunk(agent, obs[c], layer=layer) for c in _chunks(frame[new], _FRAME_PASS)]
            for out, parts in ((acts, [c[0] for c in computed]), (clean, [c[1] for c in computed])):
                out[new] = np.concatenate([np.asarray(p) for p in parts])[: len(new)]
            for j in new:
                recent.put(int(hashes[j]), obs[frame[j]], acts[j], clean[j])
        options = {"layer": layer, "slots": slots, "greedy": greedy}
        heads = [
            _head(
                agent,
                acts[frame_of[c]],
                clean[frame_of[c]],
                arrays,
                rows[c, 1],
                rows[c, 2],
                t,
                i,
                key,
                **options,
            )
            for i, c in enumerate(_chunks(pair, head_rows))
        ]
        act, kl = (np.concatenate([np.asarray(h[j]) for h in heads])[: len(pair)] for j in (0, 1))
        pair_of = pair_of.reshape(-1)
        return act[pair_of], kl[pair_of]

    policy.recent = recent  # its hit count, for whoever wants to see how much the cache saved
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
    shrink: bool = True,
) -> Play:
    """Env i plays level ``level_of[i]`` with ``policy`` until every env has ended its first episode.

    Only the environments still playing are passed to ``policy``, with labels of those in one game state (same
    level, same moves so far: procgen steps deterministically). ``max_steps`` below Heist's own timeout cuts
    episodes short (quick looks, tests): they count as failures of that length. The observations of the
    environments ``keep_frames`` are kept (for GIFs; the last one repeats after the end). ``shrink``: whenever
    half of procgen's environments have ended their episode, the rest continue in a new, smaller vectorized env
    (`HeistEnv.keep_only`; procgen steps every environment it holds, finished or not); the play is the same."""
    level_of = np.asarray(level_of, np.int32)
    if level_of.ndim != 1:
        raise JaxinterpError("`level_of` must be 1-d: one level index per environment")
    env, obs = _start(levels, level_of)
    where = np.arange(len(level_of))  # each environment's place in `env`; -1 once dropped (its episode over)
    layouts = [parse_state(s) for s in levels.states]
    log = EpisodeLog(len(level_of), layouts, level_of, obs)
    keep = np.asarray(keep_frames, np.int64)
    kept = [obs[keep]]

    def games(envs):
        return env.game_states(where[envs])

    def still_playing(obs, t):
        running = np.flatnonzero(log.length < 0)
        actions = np.zeros(len(obs), np.int32)
        actions[where[running]], kl = policy(obs[where[running]], running, t, log.group[running])
        return actions, (running, kl)

    log.look(games, np.arange(len(level_of)), 0)
    with progress.bar(len(level_of), desc="episodes", unit="episode", enabled=progress_bar) as bar:
        while env is not None:
            for step in step_policy(env, still_playing, obs=obs, steps=max_steps - env.steps):
                running, kl = step.output
                at = where[running]
                done = step.done[at]
                log.record(running, step.t, step.actions[at], kl, done, step.info["success"][at])
                left = running[~done]
                log.look(games, left, step.t + 1)
                playing = log.length[keep] < 0
                frames = step.next_obs[np.maximum(where[keep], 0)]  # dropped ones are not playing
                kept.append(np.where(playing[:, None, None, None], frames, kept[-1]))
                bar.update(int(done.sum()))
                if not len(left) or (shrink and len(left) <= env.num_envs // 2):
                    break
            else:  # `max_steps` played: the rest count as failures
                left = np.zeros(0, np.int64)
            env, obs = _keep_playing(env, where, left)
    return log.result(max_steps)._replace(frames=np.stack(kept, 1))


def _keep_playing(
    env: HeistEnv, where: np.ndarray, left: np.ndarray
) -> tuple[HeistEnv | None, np.ndarray | None]:
    """The env of only the environments ``left`` (None if none are), and their frames; ``where`` follows."""
    places = where[left]
    where[:] = -1
    if not len(left):
        env.close()
        return None, None
    where[left] = np.arange(len(left))
    env = env.keep_only(places)
    return env, env.observe()


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
        self.group = np.asarray(level_of, np.int64).copy()  # envs of one group are in the same game state

    def look(self, games: Callable[[np.ndarray], list[bytes]], envs: np.ndarray, t: int) -> None:
        """Read the entities of ``envs`` (still in their first episode) at step ``t``: one game per `group`, from
        ``games(envs)``, procgen's serialized games of those environments."""
        if not len(envs):
            return
        _, first, inverse = np.unique(self.group[envs], return_index=True, return_inverse=True)
        for game, i in zip(games(envs[first]), envs[first], strict=True):
            level = self.level_of[i]
            (x, y), count = _things(read_entities(game))
            self.path[i, t] = to_pixels(self.layouts[level], x, y)
            new = (count < self.start_things[level]) & (self.reached[i] < 0)
            self.reached[i, new] = t
        copies = envs[first][inverse.reshape(-1)]
        self.path[envs, t], self.reached[envs] = self.path[copies, t], self.reached[copies]

    def record(self, running, t, actions, kl, done, success) -> None:
        """Step ``t`` of the environments ``running``: their actions, KL, and whether their episode ended there and
        reached the gem (each in the order of ``running``)."""
        self.actions[running, t] = actions
        # Same level and same moves so far: the same game (procgen steps deterministically from a cloned state; the
        # special actions stand still, and differ from action 4 only in a field that the next step overwrites).
        move = _MOVES[actions]
        _, regrouped = np.unique(self.group[running] * _ACTIONS + move, return_inverse=True)
        self.group[running] = regrouped.reshape(-1)
        self.kl[running, t] = kl
        ended = running[done]
        self.length[ended] = t + 1
        self.success[ended] = success[done]
        gem = ended[success[done]]
        self.reached[gem, EVENTS.index("gem")] = t + 1

    def result(self, max_steps: int) -> Play:
        self.length[self.length < 0] = max_steps
        return Play(
            self.success, self.length, self.reached, self.path, self.kl, self.actions, self.first_frames, None
        )
