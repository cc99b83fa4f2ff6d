"""Spatially-aware dataset examples: one picture per feature, made of the real frames that excite it most, place by place.

For every position of the layer, the frames whose activation is highest *at that position* are kept (one per
episode) with the frame's pixels in the position's cell; the report's ``mosaic``
(`jaxinterp.report.example_sheets`) then paints each cell from its best frame, opaque where the feature responds
most and transparent where it hardly responds. This is the "spatially-aware
dataset example-based feature visualization" of Hilton et al., *Understanding RL Vision* (Distill, 2020), made for
CoinRun agents, where gradient feature visualization gave "featureless clouds of color". Heist's view does not move,
so a channel can detect different things at different places (the key ring at the top right, locks in the maze):
the mosaic shows them where they are, in the game's own pixels.

A limited number of cells may come from one episode (``reuse``), so one level does not paint the whole picture, and
an object spanning a few cells still comes out whole. The scan keeps ``per_position`` candidates per position and
feature in a jitted step per batch; memory does not grow with the dataset.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.envs.stream import stream
from jaxinterp.errors import JaxinterpError
from jaxinterp.examples.features import (
    Feature,
    as_feature,
    feature_ids,
    feature_maps,
    feature_size,
    with_params,
)
from jaxinterp.examples.source import EMPTY, Source, frame_batches, source_size
from jaxinterp.examples.topk import DEFAULT_BATCH_SIZE, Ranked, merge
from jaxinterp.models.agent import Agent, preprocess
from jaxinterp.models.receptive import FRAME_SIZE, ReceptiveField, receptive_field
from jaxinterp.progress import bar as progress_bar

__all__ = [
    "DEFAULT_PER_POSITION",
    "REUSE_SHARE",
    "SpatialExamples",
    "cell_boxes",
    "choose",
    "default_reuse",
    "spatial_examples",
]

DEFAULT_PER_POSITION = 4
"""Candidate frames kept per position and feature (from distinct episodes): what ``reuse`` chooses among."""

REUSE_SHARE = 16
"""By default one episode may fill a sixteenth of the mosaic's cells (4 of IMPALA's 8 x 8 last-stage positions, 16
of the second stage's 16 x 16): the same share of the screen at every layer, room for an object a few cells wide,
and still 16 levels or more in a picture."""


class SpatialExamples(NamedTuple):
    """Per feature and position, the best ``r`` frames there: every array is (F, H, W, r) except ``cells``
    (F, H, W, r, J, J, 3) uint8, the frame's pixels in the position's cell (J = the field's jump); unfilled slots
    have value -inf, frame and episode ``EMPTY``."""

    layer: str
    description: str
    ids: np.ndarray
    receptive_field: ReceptiveField
    values: np.ndarray
    frames: np.ndarray
    episodes: np.ndarray
    cells: np.ndarray
    num_frames: int


def cell_boxes(rf: ReceptiveField, n: int) -> np.ndarray:
    """Top (or left) pixel of the ``jump``-wide cell around each of ``n`` positions' field centres (n,)."""
    return np.floor(rf.center(np.arange(n)) - rf.jump / 2).astype(np.int64)


def _cells(frames: jax.Array, rows: np.ndarray, cols: np.ndarray, size: int) -> jax.Array:
    """The ``size``-wide cells (B, H, W, J, J, 3) of uint8 frames (B, 64, 64, 3) at top-left pixels ``rows`` (H,),
    ``cols`` (W,); pixels outside the frame are 0."""
    r, c = rows[:, None] + np.arange(size), cols[:, None] + np.arange(size)  # (H, J), (W, J)
    inside = ((r >= 0) & (r < FRAME_SIZE))[:, None, :, None] & ((c >= 0) & (c < FRAME_SIZE))[None, :, None, :]
    r, c = r.clip(0, FRAME_SIZE - 1), c.clip(0, FRAME_SIZE - 1)
    out = frames[:, r[:, None, :, None], c[None, :, None, :]]  # (B, H, W, J, J, 3)
    return jnp.where(jnp.asarray(inside)[None, ..., None], out, jnp.zeros((), out.dtype))


class _State(NamedTuple):
    ranked: Ranked  # (F·P, r) values, frame index; ys holds the episode, xs is unused (0)
    cells: jax.Array  # (F·P, r, J, J, 3) uint8


def _update(state: _State, feats, cells, index, episodes, valid) -> _State:
    """``state`` after a batch: feature maps (B, H, W, F), cells (B, H, W, J, J, 3), index/episodes/valid (B,)."""
    b, h, w, f = feats.shape
    p, r = h * w, state.ranked.values.shape[1]
    values = jnp.where(valid[:, None, None, None], feats, -jnp.inf).reshape(b, p, f).transpose(2, 1, 0)
    tile = functools.partial(jnp.broadcast_to, shape=(f, p, b))
    new = Ranked(
        values, tile(index[None, None, :]), tile(episodes[None, None, :]), tile(jnp.zeros((), jnp.int32))
    )
    new = Ranked(*(a.reshape(f * p, b) for a in new))
    # One candidate per (position, episode): Heist's view stands still, so one level's frames would fill the slots.
    keys = (jnp.concatenate([state.ranked.ys, new.ys], 1),)
    ranked, idx = merge(state.ranked, new, r, dedupe=True, keys=keys)
    ranked = ranked._replace(ys=jnp.where(ranked.frames == EMPTY, EMPTY, ranked.ys))
    per_pos = cells.reshape(b, p, *cells.shape[3:]).swapaxes(0, 1)  # (P, B, J, J, 3)
    pos = jnp.tile(jnp.arange(p), f)[:, None]  # row F·P -> its position
    fresh = per_pos[pos, jnp.clip(idx - r, 0, b - 1)]
    kept = jnp.take_along_axis(state.cells, jnp.minimum(idx, r - 1)[..., None, None, None], 1)
    return _State(ranked, jnp.where((idx >= r)[..., None, None, None], fresh, kept))


@functools.partial(jax.jit, static_argnames=("feature", "rows", "cols", "size"))
def _step(
    agent: Agent,
    state: _State,
    obs: jax.Array,
    index: jax.Array,
    episodes: jax.Array,
    valid: jax.Array,
    *,
    feature: Feature,
    rows: tuple[int, ...],
    cols: tuple[int, ...],
    size: int,
) -> _State:
    feats, _ = feature_maps(agent, agent.params, feature, preprocess(obs))
    cells = _cells(obs, np.asarray(rows), np.asarray(cols), size)
    return _update(state, feats, cells, index, episodes, valid)


def _init(n: int, r: int, jump: int) -> _State:
    """A state for ``n`` (feature, position) rows of ``r`` slots that has seen no frame."""
    empty = jnp.full((n, r), EMPTY, jnp.int32)
    return _State(
        Ranked(jnp.full((n, r), -jnp.inf, jnp.float32), empty, empty, jnp.zeros((n, r), jnp.int32)),
        jnp.zeros((n, r, jump, jump, 3), jnp.uint8),
    )


def spatial_examples(
    agent: Agent,
    layer: str | Feature,
    source: Source,
    *,
    channels: Sequence[int] | int | None = None,
    per_position: int = DEFAULT_PER_POSITION,
    batch_size: int = DEFAULT_BATCH_SIZE,
    params=None,
    progress: bool = True,
) -> SpatialExamples:
    """Stream ``source`` (as for ``find_examples``) keeping, for every feature and position, the ``per_position``
    highest-activating frames there (one per episode) and their pixels in the position's cell.

    Frames identical to an earlier one are skipped. ``progress`` shows a bar of the source frames streamed.
    """
    feature = as_feature(agent, layer, channels)
    if per_position < 1:
        raise JaxinterpError(f"per_position (={per_position}) must be >= 1")
    rf = receptive_field(agent, feature.layer)
    h, w, f = feature_size(agent, feature)
    if h == 1 and w == 1:
        raise JaxinterpError(
            f"{feature.layer!r} has one position (a dense layer): spatial examples need a convolutional layer"
        )
    rows, cols = cell_boxes(rf, h), cell_boxes(rf, w)
    step = functools.partial(
        _step,
        with_params(agent, params),
        feature=feature,
        rows=tuple(rows.tolist()),
        cols=tuple(cols.tolist()),
        size=rf.jump,
    )
    pieces = frame_batches(source, batch_size, skip_repeats=True)
    desc = f"spatial {feature.layer}"
    with progress_bar(source_size(source), desc=desc, unit="frame", enabled=progress) as bar:
        done = stream(pieces, step, _init(f * h * w, per_position, rf.jump), bar=bar)
    host = jax.device_get(done.state)
    shape = (f, h, w, per_position)
    return SpatialExamples(
        layer=feature.layer,
        description=feature.description,
        ids=feature_ids(agent, feature),
        receptive_field=rf,
        values=np.asarray(host.ranked.values).reshape(shape),
        frames=np.asarray(host.ranked.frames).reshape(shape),
        episodes=np.asarray(host.ranked.ys).reshape(shape),
        cells=np.asarray(host.cells).reshape(*shape, rf.jump, rf.jump, 3),
        num_frames=done.rows,
    )


def default_reuse(result: SpatialExamples) -> int:
    """Cells one episode may fill by default: ``REUSE_SHARE``-th of the positions, at least 1."""
    h, w = result.values.shape[1:3]
    return max(1, h * w // REUSE_SHARE)


def choose(result: SpatialExamples, j: int, reuse: int | None = None) -> np.ndarray:
    """Which candidate (H, W) each position of feature ``j`` shows: the best whose episode has filled fewer than
    ``reuse`` cells (None: `default_reuse`), positions taken from the strongest down; the best itself where all are
    used up. -1: none."""
    reuse = default_reuse(result) if reuse is None else reuse
    if reuse < 1:
        raise JaxinterpError(f"reuse (={reuse}) must be >= 1 cell per episode")
    values, episodes = result.values[j], result.episodes[j]
    h, w = values.shape[:2]
    pick = np.full((h, w), -1, np.int64)
    used: collections.Counter[int] = collections.Counter()  # cells each episode has filled
    for flat in np.argsort(-values[..., 0], axis=None, kind="stable"):
        y, x = divmod(int(flat), w)
        filled = np.flatnonzero(result.frames[j, y, x] != EMPTY)
        if not len(filled):
            continue
        free = [c for c in filled if used[int(episodes[y, x, c])] < reuse]
        pick[y, x] = c = free[0] if free else filled[0]
        used[int(episodes[y, x, c])] += 1
    return pick
