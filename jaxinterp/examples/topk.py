"""Streaming top-k over a dataset of any size: for every feature of a layer at once, in one jitted step per chunk.

The running state holds, per feature, the k highest- and k lowest-scoring frames and M ≥ k position candidates
(values, global frame index, y, x, and the layer's activation vector there, for diversity); a chunk's candidates are
concatenated to it and ``jax.lax.top_k`` keeps the best. Nothing grows with the dataset: besides the state, the host
keeps only the frames the state refers to (at most F·(2k + M)), so patches can be cropped at the end without a
second pass. ``top_k`` keeps the lower index among equal values and the running state comes first, so ties go to the
earlier frame, exactly as a stable sort of the whole dataset.

Position candidates are by default one per frame and feature (the frame's arg-max): neighbouring positions of one
frame see nearly the same patch, so letting them in would fill the candidates with near-copies before diversity
selection sees them. ``one_per_frame=False`` ranks every (frame, y, x) instead. Every list (top and
bottom frames, candidates) also keeps one example per (episode, y, x) when the source says which episode each frame
is from (a ``Dataset`` does): Heist's view does not move, so a lock or a key stays at one place for the hundreds of
frames of its episode, and those frames would otherwise fill the lists with one object before diversity selection
sees another.

Exact copies are dropped by default (``dedupe``): a standing agent or a uniform wall gives the very same patch, and
so the very same value, again and again, and k copies of one patch would fill a sheet. Values that are exactly equal
(and not zero, the value of every dead relu) count as one example, the earliest frame's; and a frame identical to an
earlier one (an agent walking into a wall) is not run through the network at all.
"""

from __future__ import annotations

import functools
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.envs.stream import Batch, stream
from jaxinterp.errors import JaxinterpError
from jaxinterp.examples.features import Feature, feature_maps, feature_size, with_params
from jaxinterp.examples.source import EMPTY, Source, frame_batches
from jaxinterp.models.agent import Agent, preprocess

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "Ranked",
    "ScanResult",
    "TopKState",
    "init_state",
    "merge",
    "scan",
    "scan_step",
    "update",
]

FrameScore = Literal["max", "mean"]

DEFAULT_BATCH_SIZE = 32
"""Frames per jitted step. Measured on CPU (benchmarks/HISTORY.md): at 64 frames and more XLA's temporary buffer
passes glibc's mmap threshold and is mapped and unmapped on every call (~20% of the CPU in page faults); 32 was
13-34% faster than 256 and still amortizes dispatch."""


class Ranked(NamedTuple):
    """Ranked examples per feature, shape (F, K) each: value, global frame index, and the position (y, x)."""

    values: Any
    frames: Any
    ys: Any
    xs: Any

    def take(self, idx) -> Ranked:
        """The examples at ``idx`` (F, K') along the ranking axis."""
        return Ranked(*(np.take_along_axis(np.asarray(a), np.asarray(idx), 1) for a in self))

    def head(self, k: int) -> Ranked:
        """The first ``k`` examples of every feature."""
        return Ranked(*(np.asarray(a)[:, :k] for a in self))


class TopKState(NamedTuple):
    """Running state: top/bottom frames (F, k) by frame score, position candidates (F, M) and their vectors."""

    top: Ranked
    bottom: Ranked
    candidates: Ranked
    vectors: jax.Array  # (F, M, C) layer activations at each candidate position (C = 0 when not kept)
    # The episode (without episodes: the frame) of each entry of top, bottom and candidates: (F, k), (F, k), (F, M).
    episodes: tuple[jax.Array, jax.Array, jax.Array]


def _empty(num_features: int, k: int, fill: float) -> Ranked:
    full = jnp.full((num_features, k), EMPTY, jnp.int32)
    return Ranked(jnp.full((num_features, k), fill, jnp.float32), full, full, full)


def init_state(num_features: int, k: int, num_candidates: int, vector_size: int) -> TopKState:
    """A state that has seen no frame: values ∓inf, frame indices ``EMPTY``."""
    return TopKState(
        top=_empty(num_features, k, -jnp.inf),
        bottom=_empty(num_features, k, jnp.inf),
        candidates=_empty(num_features, num_candidates, -jnp.inf),
        vectors=jnp.zeros((num_features, num_candidates, vector_size), jnp.float32),
        episodes=tuple(jnp.full((num_features, n), EMPTY, jnp.int32) for n in (k, k, num_candidates)),
    )


def merge(
    run: Ranked,
    new: Ranked,
    k: int,
    dedupe: bool,
    pool: int | None = None,
    keys: tuple[jax.Array, ...] = (),
) -> tuple[Ranked, jax.Array]:
    """The ``k`` highest of ``run`` followed by ``new`` (F, ·) per feature, and where each came from.

    With ``dedupe`` an example whose value exactly equals a higher-ranked one's is dropped (the earlier one stays),
    looking at the best ``pool`` (default: all); so is one whose ``keys`` (arrays shaped like the concatenated
    values) all equal a higher-ranked example's. Slots left without an example get -inf and frame ``EMPTY``.
    """
    values = jnp.concatenate([run.values, new.values], 1)
    if dedupe:
        ranked, order = jax.lax.top_k(values, min(values.shape[1], pool or values.shape[1]))
        # Sorted, so copies are neighbours; exact zeros are dead relus, distinct examples that merely agree.
        copy = jnp.pad((ranked[:, 1:] == ranked[:, :-1]) & (ranked[:, 1:] != 0), ((0, 0), (1, 0)))
        if keys:
            ranked_keys = [jnp.take_along_axis(key, order, 1) for key in keys]
            same = functools.reduce(
                jnp.logical_and, [key[:, :, None] == key[:, None, :] for key in ranked_keys]
            )
            n = ranked.shape[1]
            higher = jnp.arange(n)[None, :] < jnp.arange(n)[:, None]  # [i, j]: j ranks above i
            copy |= (same & higher & (ranked > -jnp.inf)[:, None, :]).any(2)
        ranked = jnp.where(copy, -jnp.inf, ranked)
        values, j = jax.lax.top_k(ranked, k)
        idx = jnp.take_along_axis(order, j, 1)
    else:
        values, idx = jax.lax.top_k(values, k)
    pick = [
        jnp.take_along_axis(jnp.concatenate([a, b], 1), idx, 1) for a, b in zip(run[1:], new[1:], strict=True)
    ]
    pick[0] = jnp.where(values == -jnp.inf, EMPTY, pick[0])  # no example in this slot
    return Ranked(values, *pick), idx


def _merge_unique(
    run: Ranked, run_episodes, new: Ranked, new_episodes, k: int, dedupe: bool, width: int, pool=None
) -> tuple[Ranked, jax.Array, jax.Array]:
    """``merge`` keeping one example per (episode, y, x): (merged, its episodes, where each came from)."""
    cat = functools.partial(jnp.concatenate, axis=1)
    episodes = cat([run_episodes, new_episodes])
    keys = (episodes, cat([run.ys * width + run.xs, new.ys * width + new.xs]))
    merged, idx = merge(run, new, k, dedupe, pool, keys)
    return merged, jnp.take_along_axis(episodes, idx, 1), idx


def _negate(r: Ranked) -> Ranked:
    return r._replace(values=-r.values)


def update(
    state: TopKState,
    feats: jax.Array,
    acts: jax.Array,
    index: jax.Array,
    valid: jax.Array,
    episodes: jax.Array | None = None,
    *,
    frame_score: FrameScore = "max",
    one_per_frame: bool = True,
    dedupe: bool = True,
) -> TopKState:
    """``state`` after seeing a batch: feature maps (B, H, W, F), layer acts (B, H, W, C), frame indices (B,),
    and each frame's episode (B,) in ``episodes`` (None: every frame its own).

    Every list keeps one example per (episode, y, x) (with ``dedupe``). Rows with ``valid`` False (padding of a
    short batch) never enter the state.
    """
    b, h, w, f = feats.shape
    k, m = state.top.values.shape[1], state.candidates.values.shape[1]
    flat = feats.reshape(b, h * w, f)
    arg_max, arg_min = jnp.argmax(flat, 1), jnp.argmin(flat, 1)  # (B, F)
    score = jnp.max(flat, 1) if frame_score == "max" else jnp.mean(flat, 1)
    keep = valid[:, None]
    frames = jnp.broadcast_to(index[:, None], (b, f)).astype(jnp.int32)

    def ranked(values, pos, fill):
        return Ranked(jnp.where(keep, values, fill).T, frames.T, (pos // w).T, (pos % w).T)

    episodes = index if episodes is None else episodes
    per_frame = jnp.broadcast_to(episodes[None, :], (f, b))
    top_ep, bottom_ep, cand_ep = state.episodes
    top, top_ep, _ = _merge_unique(
        state.top, top_ep, ranked(score, arg_max, -jnp.inf), per_frame, k, dedupe, w
    )
    low = _negate(ranked(score, arg_min, jnp.inf))
    bottom, bottom_ep, _ = _merge_unique(_negate(state.bottom), bottom_ep, low, per_frame, k, dedupe, w)

    if one_per_frame:
        new = ranked(jnp.max(flat, 1), arg_max, -jnp.inf)
        local = jnp.broadcast_to(jnp.arange(b)[None, :], (f, b))
        new_ep = per_frame
    else:  # every position: candidate j is frame j // (H W), position j % (H W)
        pos = jnp.arange(b * h * w) % (h * w)
        rows = jnp.arange(b * h * w) // (h * w)
        values = jnp.where(valid[rows][None, :], flat.transpose(2, 0, 1).reshape(f, -1), -jnp.inf)
        new = Ranked(
            values, *(jnp.broadcast_to(a[None, :], (f, b * h * w)) for a in (index[rows], pos // w, pos % w))
        )
        new = new._replace(frames=new.frames.astype(jnp.int32))
        local = jnp.broadcast_to(rows[None, :], (f, b * h * w))
        new_ep = jnp.broadcast_to(episodes[rows][None, :], (f, b * h * w))
    # Every position: dedupe among the best 2M + B only (a full sort of B·H·W values per step would cost more).
    pool = None if one_per_frame else 2 * m + b
    candidates, cand_ep, idx = _merge_unique(state.candidates, cand_ep, new, new_ep, m, dedupe, w, pool)

    vectors = state.vectors
    if vectors.shape[-1]:
        from_new = idx >= m
        n = jnp.take_along_axis(local, jnp.where(from_new, idx - m, 0), 1)
        fresh = acts[n, candidates.ys.clip(0), candidates.xs.clip(0)]  # (F, M, C)
        kept = jnp.take_along_axis(vectors, jnp.minimum(idx, m - 1)[..., None], 1)
        vectors = jnp.where(from_new[..., None], fresh, kept)
    return TopKState(top, _negate(bottom), candidates, vectors, (top_ep, bottom_ep, cand_ep))


class ScanResult(NamedTuple):
    """The final state as numpy, trimmed to filled slots; the frames it refers to; frames seen."""

    top: Ranked
    bottom: Ranked
    candidates: Ranked
    vectors: np.ndarray
    frames: dict[int, np.ndarray]
    num_frames: int


def _referenced(state) -> np.ndarray:
    refs = np.concatenate([np.asarray(r.frames).ravel() for r in (state.top, state.bottom, state.candidates)])
    return np.unique(refs[refs != EMPTY])


def _keep_referenced(cache: dict[int, np.ndarray], state: TopKState, batch: Batch) -> dict[int, np.ndarray]:
    """The frames ``state`` refers to, from ``cache`` (those the state before ``batch`` referred to) and ``batch``."""
    frames, index, _ = batch.arrays
    refs = _referenced(state)
    kept = set(refs.tolist())
    cache = {i: frame for i, frame in cache.items() if i in kept}
    for i in np.flatnonzero(batch.valid & np.isin(index, refs)):
        cache[int(index[i])] = np.array(frames[i])
    return cache


def _trim(r: Ranked) -> Ranked:
    """Drop the trailing slots no feature filled; a feature with fewer distinct examples keeps ``EMPTY`` slots."""
    filled = int((np.asarray(r.frames) != EMPTY).any(0).sum())
    return r.head(filled)


@functools.partial(jax.jit, static_argnames=("feature", "frame_score", "one_per_frame", "dedupe"))
def scan_step(
    agent: Agent,
    state: TopKState,
    obs: jax.Array,
    index: jax.Array,
    episodes: jax.Array,
    valid: jax.Array,
    *,
    feature: Feature,
    frame_score: FrameScore,
    one_per_frame: bool,
    dedupe: bool,
) -> TopKState:
    """``state`` after a batch of uint8 frames, their global indices, episodes and real-row mask (one compile per
    architecture and options)."""
    feats, acts = feature_maps(agent, agent.params, feature, preprocess(obs))
    options = {"frame_score": frame_score, "one_per_frame": one_per_frame, "dedupe": dedupe}
    return update(state, feats, acts, index, valid, episodes, **options)


def scan(
    agent: Agent,
    feature: Feature,
    source: Source,
    *,
    k: int,
    num_candidates: int,
    frame_score: FrameScore = "max",
    one_per_frame: bool = True,
    dedupe: bool = True,
    keep_vectors: bool = True,
    batch_size: int = DEFAULT_BATCH_SIZE,
    params=None,
    bar=None,
) -> ScanResult:
    """Stream ``source`` through the running top-k of every feature of ``feature``; memory stays bounded.

    ``bar`` (the caller's tqdm bar) counts the source frames each batch covered, repeats included.
    """
    if frame_score not in ("max", "mean"):
        raise JaxinterpError(f"frame_score must be 'max' or 'mean', got {frame_score!r}")
    if k < 1 or num_candidates < k:
        raise JaxinterpError(f"need 1 <= k <= num_candidates, got k={k}, num_candidates={num_candidates}")
    agent = with_params(agent, params)
    _, _, f = feature_size(agent, feature)
    c = agent.layer_shapes[feature.layer][-1] if keep_vectors else 0
    step = functools.partial(
        scan_step, agent, feature=feature, frame_score=frame_score, one_per_frame=one_per_frame, dedupe=dedupe
    )
    pieces = frame_batches(source, batch_size, skip_repeats=dedupe)
    # The host keeps the frames the state refers to one batch behind, while the device runs the next batch.
    done = stream(pieces, step, init_state(f, k, num_candidates, c), fold=_keep_referenced, acc={}, bar=bar)
    host = jax.device_get(done.state)
    top, bottom, candidates = _trim(host.top), _trim(host.bottom), _trim(host.candidates)
    vectors = np.asarray(host.vectors)[:, : candidates.values.shape[1]]
    return ScanResult(top, bottom, candidates, vectors, done.acc, done.rows)
