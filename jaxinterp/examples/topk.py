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
import hashlib
from collections.abc import Callable, Iterator
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.errors import JaxinterpError
from jaxinterp.examples.features import Feature, feature_maps, feature_size
from jaxinterp.models.agent import OBS_SHAPE, Agent, pad_rows, preprocess

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "EMPTY",
    "Ranked",
    "ScanResult",
    "TopKState",
    "init_state",
    "iter_batches",
    "merge",
    "scan",
    "update",
]

FrameScore = Literal["max", "mean"]

DEFAULT_BATCH_SIZE = 32
"""Frames per jitted step. Measured on CPU (benchmarks/HISTORY.md): at 64 frames and more XLA's temporary buffer
passes glibc's mmap threshold and is mapped and unmapped on every call (~20% of the CPU in page faults); 32 was
13-34% faster than 256 and still amortizes dispatch."""

EMPTY = -1
"""Frame index of a slot no frame has filled yet (fewer frames seen than slots)."""

_MAX_INDEX = np.iinfo(np.int32).max  # frame indices travel as int32 on the device


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


Source = Any  # uint8 array (N, 64, 64, 3) | object with iter_chunks | iterable of chunks (see iter_batches)


def _check_frames(frames) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != OBS_SHAPE:
        raise JaxinterpError(
            f"frame chunks must be uint8 (N, 64, 64, 3) as procgen returns them, got {frames.dtype} {frames.shape}"
        )
    return frames


def _chunks(source: Source) -> Iterator[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]]:
    """(frames, global indices or None, episode ids or None) per chunk, whatever form the source takes."""
    if hasattr(source, "iter_chunks"):  # a jaxinterp Dataset: stored chunks, frames and their episodes
        for chunk in source.iter_chunks(None, fields=["frames", "episode_ids"]):
            yield chunk["frames"], chunk["index"], chunk["episode_ids"]
    elif isinstance(source, np.ndarray | jax.Array):
        yield np.asarray(source), None, None
    else:
        for chunk in source:
            if isinstance(chunk, dict):
                if "frames" not in chunk:
                    raise JaxinterpError(
                        f"a chunk dict needs a 'frames' entry (and 'index', 'episode_ids'), got {sorted(chunk)}"
                    )
                yield chunk["frames"], chunk.get("index"), chunk.get("episode_ids")
            elif isinstance(chunk, tuple):
                if not 1 <= len(chunk) <= 3:
                    raise JaxinterpError(
                        f"a chunk tuple is (frames[, index[, episode_ids]]), got {len(chunk)} entries"
                    )
                yield (*chunk, None, None)[:3]
            else:
                yield chunk, None, None


def _first_copies(frames: np.ndarray, seen: set[bytes]) -> np.ndarray:
    """Mask of the frames whose exact bytes have not been seen before (``seen`` is updated)."""
    keep = np.zeros(len(frames), bool)
    for i, frame in enumerate(frames):
        digest = hashlib.blake2b(frame.tobytes(), digest_size=16).digest()
        if digest not in seen:
            seen.add(digest)
            keep[i] = True
    return keep


def iter_batches(
    source: Source, batch_size: int, *, skip_repeats: bool = False
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, int]]:
    """(uint8 frames, int64 global indices, int64 episode ids, source frames covered) in pieces of at most
    ``batch_size``; chunks without indices count on, and a frame without an episode id is its own episode (its
    index).

    With ``skip_repeats`` a frame identical to an earlier one is left out (its activations would be identical too);
    the last piece of each chunk counts the frames skipped in it, and a chunk of repeats only gives an empty piece.
    """
    if batch_size < 1:
        raise JaxinterpError(f"batch_size (={batch_size}) must be >= 1")
    next_index, seen = 0, set()
    for frames, index, episodes in _chunks(source):
        frames = _check_frames(frames)
        n = len(frames)
        index = np.arange(next_index, next_index + n) if index is None else np.asarray(index, np.int64)
        episodes = index if episodes is None else np.asarray(episodes, np.int64)
        if index.shape != (n,) or episodes.shape != (n,):
            raise JaxinterpError(
                f"a chunk of {n} frames came with {index.shape} indices and {episodes.shape} episode ids; "
                "give one of each per frame"
            )
        for name, values in (("frame indices", index), ("episode ids", episodes)):
            if n and (values.min() < 0 or values.max() > _MAX_INDEX):
                raise JaxinterpError(
                    f"{name} must lie in [0, {_MAX_INDEX}], got {values.min()}..{values.max()}"
                )
        next_index = int(index.max()) + 1 if n else next_index
        if skip_repeats:
            keep = _first_copies(frames, seen)
            frames, index, episodes = frames[keep], index[keep], episodes[keep]
        starts = range(0, len(frames), batch_size) or [0]
        for s in starts:
            piece = slice(s, s + batch_size)
            covered = len(frames[piece]) + (n - len(frames) if s == starts[-1] else 0)
            yield frames[piece], index[piece], episodes[piece], covered


def _referenced(state) -> np.ndarray:
    refs = np.concatenate([np.asarray(r.frames).ravel() for r in (state.top, state.bottom, state.candidates)])
    return np.unique(refs[refs != EMPTY])


def _trim(r: Ranked) -> Ranked:
    """Drop the trailing slots no feature filled; a feature with fewer distinct examples keeps ``EMPTY`` slots."""
    filled = int((np.asarray(r.frames) != EMPTY).any(0).sum())
    return r.head(filled)


@functools.lru_cache(maxsize=16)
def make_step(agent: Agent, feature: Feature, *, frame_score: FrameScore, one_per_frame: bool, dedupe: bool):
    """The jitted per-batch step ``(params, state, obs uint8, index, valid, episodes) -> state``."""
    options = {"frame_score": frame_score, "one_per_frame": one_per_frame, "dedupe": dedupe}

    def step(params, state, obs, index, valid, episodes):
        feats, acts = feature_maps(agent, params, feature, preprocess(obs))
        return update(state, feats, acts, index, valid, episodes, **options)

    return jax.jit(step)


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
    progress: Callable[[int], None] | None = None,
) -> ScanResult:
    """Stream ``source`` through the running top-k of every feature of ``feature``; memory stays bounded.

    ``progress(n)`` is called after each batch with the number of source frames it covered (repeats included).
    """
    if frame_score not in ("max", "mean"):
        raise JaxinterpError(f"frame_score must be 'max' or 'mean', got {frame_score!r}")
    if k < 1 or num_candidates < k:
        raise JaxinterpError(f"need 1 <= k <= num_candidates, got k={k}, num_candidates={num_candidates}")
    params = agent.params if params is None else params
    _, _, f = feature_size(agent, feature)
    c = agent.layer_shapes[feature.layer][-1] if keep_vectors else 0
    state = init_state(f, k, num_candidates, c)
    step = make_step(agent, feature, frame_score=frame_score, one_per_frame=one_per_frame, dedupe=dedupe)
    cache: dict[int, np.ndarray] = {}
    pending: tuple[TopKState, np.ndarray, np.ndarray] | None = None
    seen = 0

    def keep_referenced(state, frames, index):
        # The cache held every frame the previous state referred to; add this batch's, drop the rest.
        refs = _referenced(state)
        for i in np.flatnonzero(np.isin(index, refs)):
            cache[int(index[i])] = np.array(frames[i])
        for i in set(cache) - set(refs.tolist()):
            del cache[i]

    for frames, index, episodes, covered in iter_batches(source, batch_size, skip_repeats=dedupe):
        n = len(frames)
        seen += covered
        if progress is not None:
            progress(covered)
        if n == 0:
            continue
        (frames_in,), valid = pad_rows(batch_size, (frames,))
        (index_in, episodes_in), _ = pad_rows(batch_size, (index, episodes), EMPTY)
        # dispatched asynchronously
        state = step(params, state, frames_in, index_in.astype(np.int32), valid, episodes_in.astype(np.int32))
        if pending is not None:  # overlaps the device step just dispatched
            keep_referenced(*pending)
        pending = (state, frames, index)
    if pending is not None:
        keep_referenced(*pending)
    host = jax.device_get(state)
    top, bottom, candidates = _trim(host.top), _trim(host.bottom), _trim(host.candidates)
    vectors = np.asarray(host.vectors)[:, : candidates.values.shape[1]]
    return ScanResult(top, bottom, candidates, vectors, cache, seen)
