"""Receptive-field crops of frames, and greedy diverse selection among top-activating candidates.

Diversity follows lucid's idea in selection form: pick the best remaining candidate by
``score_i - weight * max_j cos(i, j)`` over those already chosen; weight 0 is exactly plain top-k.
"""

from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.errors import JaxinterpError
from jaxinterp.models.receptive import FRAME_SIZE, ReceptiveField

__all__ = [
    "COSINE_EPS",
    "DEFAULT_PAD_VALUE",
    "cosine_similarity",
    "crop",
    "crop_positions",
    "patch_origin",
    "select_diverse",
    "similarity",
]

DiversityOn = Literal["activations", "pixels"]

DEFAULT_PAD_VALUE = 0
"""Pixels of a patch that fall outside the frame (the field reaching into padding) are black, like zero padding."""

COSINE_EPS = 1e-8
"""Added to norms so an all-zero vector (a dead position, a flat patch) has cosine 0 with everything."""


def patch_origin(rf: ReceptiveField, i, size: int | None = None) -> np.ndarray:
    """Top (or left) input pixel of the patch for position ``i``: the field's, or a ``size`` window centred on it."""
    start = rf.start + np.asarray(i, np.int64) * rf.jump
    return start if size is None else start + (rf.size - size) // 2


def crop(frames: np.ndarray, y0, x0, size: int, pad_value: int = DEFAULT_PAD_VALUE) -> np.ndarray:
    """Square crops (N, size, size, 3) at top-left ``(y0, x0)`` (N,) of frames (N, 64, 64, 3), padded outside."""
    frames = np.asarray(frames)
    offsets = np.arange(size)
    rows = np.asarray(y0, np.int64).reshape(-1, 1) + offsets  # (N, size)
    cols = np.asarray(x0, np.int64).reshape(-1, 1) + offsets
    inside = ((rows >= 0) & (rows < FRAME_SIZE))[:, :, None] & ((cols >= 0) & (cols < FRAME_SIZE))[:, None, :]
    n = np.arange(len(frames))[:, None, None]
    out = frames[n, rows.clip(0, FRAME_SIZE - 1)[:, :, None], cols.clip(0, FRAME_SIZE - 1)[:, None, :]]
    return np.where(inside[..., None], out, np.asarray(pad_value, frames.dtype))


def crop_positions(
    frames: dict[int, np.ndarray] | np.ndarray,
    frame_idx,
    ys,
    xs,
    rf: ReceptiveField,
    *,
    size: int | None = None,
    pad_value: int = DEFAULT_PAD_VALUE,
) -> np.ndarray:
    """Patches (..., P, P, 3) under positions ``(ys, xs)`` of frames ``frame_idx`` (any equal shapes).

    ``frames`` maps a global index to its frame (a dict, or an array indexed by it); a negative index (an empty
    slot) gives a patch of ``pad_value``. P is the receptive field (``size=None``) or ``size`` pixels centred on it.
    """
    frame_idx = np.asarray(frame_idx)
    p = rf.size if size is None else int(size)
    if p < 1:
        raise JaxinterpError(f"patch size must be >= 1, got {p}")
    flat = frame_idx.ravel()
    if isinstance(frames, dict):
        stack = (
            np.stack([frames[int(i)] for i in flat])
            if flat.size
            else np.zeros((0, FRAME_SIZE, FRAME_SIZE, 3))
        )
    else:
        stack = np.asarray(frames)[flat]
    y0 = patch_origin(rf, np.asarray(ys).ravel(), size)
    x0 = patch_origin(rf, np.asarray(xs).ravel(), size)
    return crop(stack.astype(np.uint8), y0, x0, p, pad_value).reshape(*frame_idx.shape, p, p, 3)


def cosine_similarity(x: jax.Array) -> jax.Array:
    """Pairwise cosine similarity (M, M) of the rows of ``x`` (M, D)."""
    x = x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + COSINE_EPS)
    return x @ x.T


def similarity(vectors_or_patches: np.ndarray, on: DiversityOn) -> np.ndarray:
    """Cosine similarity per feature (F, M, M) of candidates' activation vectors (F, M, C) or patches (F, M, P, P, 3).

    Patches are centred (each minus its mean) first: raw Heist pixels are all positive and mostly background, so
    every uncentred pair would have cosine near 1.
    """
    if on == "activations":
        return np.asarray(jax.vmap(cosine_similarity)(jnp.asarray(vectors_or_patches, jnp.float32)))
    if on == "pixels":
        out = []
        for patches in vectors_or_patches:  # one feature at a time: deep-layer patches are large
            x = jnp.asarray(patches.reshape(len(patches), -1), jnp.float32)
            out.append(np.asarray(cosine_similarity(x - x.mean(-1, keepdims=True))))
        return np.stack(out) if out else np.zeros((0, 0, 0), np.float32)
    raise JaxinterpError(f"diversity_on must be 'activations' or 'pixels', got {on!r}")


@functools.partial(jax.jit, static_argnames="k")
def _select(scores: jax.Array, sim: jax.Array, weight: jax.Array, k: int) -> jax.Array:
    def body(t, carry):
        chosen, max_sim, out = carry
        penalty = jnp.where(t > 0, max_sim, 0.0)  # nothing chosen yet: no penalty
        adjusted = jnp.where(chosen, -jnp.inf, scores - weight * penalty)
        i = jnp.argmax(adjusted)  # the first of equals, as top_k
        return chosen.at[i].set(True), jnp.maximum(max_sim, sim[i]), out.at[t].set(i)

    m = scores.shape[0]
    init = (jnp.zeros(m, bool), jnp.full(m, -jnp.inf), jnp.zeros(k, jnp.int32))
    return jax.lax.fori_loop(0, k, body, init)[2]


def select_diverse(scores, sim, k: int, weight: float = 0.0) -> np.ndarray:
    """Indices (F, k) chosen greedily by ``score_i - weight * max_j sim(i, j)`` over chosen j, per feature.

    ``scores`` (F, M), ``sim`` (F, M, M). ``weight`` is in the scores' units; 0 gives plain top-k. A candidate
    anti-correlated with every chosen one (max cos < 0) gains, as the formula says.
    """
    scores = jnp.asarray(scores, jnp.float32)
    if not 0 <= k <= scores.shape[-1]:
        raise JaxinterpError(f"cannot select k={k} examples from {scores.shape[-1]} candidates")
    if weight < 0:
        raise JaxinterpError(f"diversity weight must be >= 0 (0 = plain top-k), got {weight}")
    select = jax.vmap(_select, in_axes=(0, 0, None, None))
    return np.asarray(select(scores, jnp.asarray(sim, jnp.float32), jnp.float32(weight), k))
