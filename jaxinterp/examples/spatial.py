"""Spatially-aware dataset examples: one picture per feature, made of the real frames that excite it most, place by place.

For every position of the layer, the frames whose activation is highest *at that position* are kept (one per
episode) with the frame's pixels in the position's cell; ``mosaic`` then paints each cell from its best frame,
opaque where the feature responds most and transparent where it hardly responds. This is the "spatially-aware
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
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.errors import JaxinterpError
from jaxinterp.examples.features import Feature, as_feature, feature_ids, feature_maps, feature_size
from jaxinterp.examples.topk import DEFAULT_BATCH_SIZE, EMPTY, Ranked, Source, iter_batches, merge
from jaxinterp.models.agent import Agent, pad_rows, preprocess
from jaxinterp.models.receptive import FRAME_SIZE, ReceptiveField, receptive_field

__all__ = [
    "DEFAULT_PER_POSITION",
    "REUSE_SHARE",
    "SpatialExamples",
    "cell_boxes",
    "choose",
    "default_reuse",
    "mosaic",
    "spatial_examples",
]

DEFAULT_PER_POSITION = 4
"""Candidate frames kept per position and feature (from distinct episodes): what ``reuse`` chooses among."""

REUSE_SHARE = 16
"""By default one episode may fill a sixteenth of the mosaic's cells (4 of IMPALA's 8 x 8 last-stage positions, 16
of the second stage's 16 x 16): the same share of the screen at every layer, room for an object a few cells wide,
and still 16 levels or more in a picture."""

CHECKER = (204, 255)
"""Grey and white of the checkerboard that shows through where a feature hardly responds: the usual sign of
transparency."""
CHECKER_SIZE = 4


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


@functools.lru_cache(maxsize=16)
def _make_step(agent: Agent, feature: Feature, rows: tuple[int, ...], cols: tuple[int, ...], size: int):
    rows, cols = np.asarray(rows), np.asarray(cols)

    def step(params, state, obs, index, episodes, valid):
        feats, _ = feature_maps(agent, params, feature, preprocess(obs))
        return _update(state, feats, _cells(obs, rows, cols, size), index, episodes, valid)

    return jax.jit(step)


def spatial_examples(
    agent: Agent,
    layer: str | Feature,
    source: Source,
    *,
    channels: Sequence[int] | int | None = None,
    per_position: int = DEFAULT_PER_POSITION,
    batch_size: int = DEFAULT_BATCH_SIZE,
    params=None,
    progress: Callable[[int], None] | None = None,
) -> SpatialExamples:
    """Stream ``source`` (as for ``find_examples``) keeping, for every feature and position, the ``per_position``
    highest-activating frames there (one per episode) and their pixels in the position's cell.

    Frames identical to an earlier one are skipped. ``progress(n)`` gets the source frames each batch covered.
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
    params = agent.params if params is None else params
    step = _make_step(agent, feature, tuple(rows.tolist()), tuple(cols.tolist()), rf.jump)
    n, r = f * h * w, per_position
    empty = jnp.full((n, r), EMPTY, jnp.int32)
    state = _State(
        Ranked(jnp.full((n, r), -jnp.inf, jnp.float32), empty, empty, jnp.zeros((n, r), jnp.int32)),
        jnp.zeros((n, r, rf.jump, rf.jump, 3), jnp.uint8),
    )
    seen = 0
    for frames, index, episodes, covered in iter_batches(source, batch_size, skip_repeats=True):
        seen += covered
        if progress is not None:
            progress(covered)
        if len(frames) == 0:
            continue
        (frames_in,), valid = pad_rows(batch_size, (frames,))
        (index_in, episodes_in), _ = pad_rows(batch_size, (index, episodes), EMPTY)
        state = step(params, state, frames_in, index_in.astype(np.int32), episodes_in.astype(np.int32), valid)
    host = jax.device_get(state)
    shape = (f, h, w, r)
    return SpatialExamples(
        layer=feature.layer,
        description=feature.description,
        ids=feature_ids(agent, feature),
        receptive_field=rf,
        values=np.asarray(host.ranked.values).reshape(shape),
        frames=np.asarray(host.ranked.frames).reshape(shape),
        episodes=np.asarray(host.ranked.ys).reshape(shape),
        cells=np.asarray(host.cells).reshape(*shape, rf.jump, rf.jump, 3),
        num_frames=seen,
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


def mosaic(result: SpatialExamples, j: int, reuse: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Feature ``j``'s picture (64, 64, 3) uint8 and the value shown at each position (H, W; NaN: no frame).

    Each cell shows its chosen frame's pixels over a grey-and-white checkerboard with opacity ``(value - lo) / (hi - lo)``,
    lo and hi the weakest and strongest value shown: the feature's best response at every place of the screen,
    in the game's own pixels. Relative, so signed features (a residual sum) read like relus; the values say how
    strong.
    """
    pick = choose(result, j, reuse)
    h, w = pick.shape
    filled = pick >= 0
    shown = np.where(filled, np.take_along_axis(result.values[j], pick.clip(0)[..., None], 2)[..., 0], np.nan)
    lo, hi = (shown[filled].min(), shown[filled].max()) if filled.any() else (0.0, 0.0)
    alpha = np.where(filled, (shown - lo) / (hi - lo), 0.0) if hi > lo else filled.astype(np.float64)
    yy, xx = np.mgrid[:FRAME_SIZE, :FRAME_SIZE]
    checker = np.where((yy // CHECKER_SIZE + xx // CHECKER_SIZE) % 2, *CHECKER).astype(np.float32)
    canvas = np.repeat(checker[..., None], 3, -1)
    rf = result.receptive_field
    rows, cols = cell_boxes(rf, h), cell_boxes(rf, w)
    for y in range(h):
        for x in range(w):
            if pick[y, x] < 0:
                continue
            cell = result.cells[j, y, x, pick[y, x]].astype(np.float32)
            y0, x0 = rows[y], cols[x]
            ys = slice(max(y0, 0), min(y0 + rf.jump, FRAME_SIZE))
            xs = slice(max(x0, 0), min(x0 + rf.jump, FRAME_SIZE))
            piece = cell[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
            canvas[ys, xs] = alpha[y, x] * piece + (1 - alpha[y, x]) * canvas[ys, xs]
    return np.round(canvas).astype(np.uint8), shown
