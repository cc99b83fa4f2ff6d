"""NMF directions: a layer's activations factored into a few non-negative parts, each a direction in channel space.

Following lucid's *Building Blocks* and *Understanding RL Vision*, the activations of sampled frames are flattened
to one row per (frame, position) and factored ``X ≈ W H`` with W, H ≥ 0; each of the K rows of H is a direction
whose dataset examples, mosaics and objects the other tools show as for a channel (``direction(layer, H.T)``).
Directions are often close to one channel, and then say which channels matter; where they mix channels they
find parts of the game no single channel stands for. Signed layers (a residual sum) are clipped at 0 first: NMF
needs non-negative data, and what is below 0 is what the following relu removes. Each channel is scaled to unit
RMS before factoring (and the directions scaled back): unscaled, one loud channel took 3 of 8 directions of this
agent's last stage, nearly identical copies of itself, while quieter channels got none.

The factorization is Lee and Seung's multiplicative updates on the Frobenius error, as one jitted ``fori_loop``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.atomic import write_npz
from jaxinterp.errors import JaxinterpError
from jaxinterp.examples.features import Feature, compute_feature_maps
from jaxinterp.models.agent import Agent

__all__ = [
    "DEFAULT_ROWS",
    "DEFAULT_STEPS",
    "FIT_FRAMES",
    "NMFDirections",
    "describe",
    "fit_directions",
    "nmf",
    "save_npz",
]

DEFAULT_STEPS = 1000
"""Multiplicative updates: converged to ~1e-4 relative change of the error on this agent's layers."""
DEFAULT_ROWS = 200_000
"""(frame, position) rows the factorization sees at most, sampled evenly: a few MB per channel."""
FIT_FRAMES = 2048
"""Frames of a dataset (evenly spaced) that `jaxinterp examples --nmf` fits on: many levels, ~1 s of forward."""
TOP_CHANNELS = 3
"""Channels `describe` names per direction."""
_EPS = 1e-9


class NMFDirections(NamedTuple):
    """K directions of ``layer`` (rows of ``components`` (K, C), unit norm, strongest first, to project raw
    activations on); ``explained``: the fraction of the channel-scaled rows' squared norm the factorization
    reconstructs (1 - |X - WH|² / |X|²); ``share``: each direction's part of the total of W H."""

    layer: str
    components: np.ndarray
    explained: float
    share: np.ndarray
    rows: int

    def feature(self) -> Feature:
        """The directions as a feature of K outputs (``relu(acts) @ components.T``: the activations as factored),
        for `find_examples`, `spatial_examples`, `object_response`."""
        return Feature(
            self.layer,
            functools.partial(_clipped_projection, mat=jnp.asarray(self.components.T)),
            f"{self.layer} NMF directions ({len(self.components)})",
        )


def _clipped_projection(acts: jax.Array, mat: jax.Array) -> jax.Array:
    return jnp.maximum(acts, 0.0) @ mat


@functools.partial(jax.jit, static_argnames=("k", "steps"))
def nmf(
    x: jax.Array, k: int, steps: int = DEFAULT_STEPS, key: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """``(W (N, k), H (k, C))`` with ``x ≈ W H``, all non-negative, for non-negative ``x`` (N, C): multiplicative
    updates from a random start drawn from ``key`` (default key 0), scaled to x's mean."""
    key = jax.random.key(0) if key is None else key
    kw, kh = jax.random.split(key)
    scale = jnp.sqrt(jnp.mean(x) / k)
    w = jax.random.uniform(kw, (x.shape[0], k), x.dtype) * scale
    h = jax.random.uniform(kh, (k, x.shape[1]), x.dtype) * scale

    def step(_, wh):
        w, h = wh
        h = h * (w.T @ x) / (w.T @ w @ h + _EPS)
        w = w * (x @ h.T) / (w @ (h @ h.T) + _EPS)
        return w, h

    return jax.lax.fori_loop(0, steps, step, (w, h))


def _rows(agent: Agent, layer: str, frames: np.ndarray, max_rows: int, seed: int) -> np.ndarray:
    """Non-negative activation rows (≤ max_rows, C) of ``layer`` over ``frames``, positions sampled evenly."""
    acts = compute_feature_maps(agent, layer, frames)  # (N, H, W, C)
    x = np.maximum(acts.reshape(-1, acts.shape[-1]), 0.0)
    if len(x) > max_rows:
        x = x[np.sort(np.random.default_rng(seed).choice(len(x), max_rows, replace=False))]
    return x


def fit_directions(
    agent: Agent,
    layer: str,
    frames: np.ndarray,
    k: int,
    *,
    steps: int = DEFAULT_STEPS,
    max_rows: int = DEFAULT_ROWS,
    seed: int = 0,
) -> NMFDirections:
    """``k`` NMF directions of ``layer`` fitted on uint8 ``frames`` (N, 64, 64, 3) (every position of each frame,
    up to ``max_rows`` (frame, position) rows sampled with ``seed``)."""
    (layer,) = agent.check_layers([layer])
    c = agent.layer_shapes[layer][-1]
    if not 1 <= k <= c:
        raise JaxinterpError(f"k (={k}) NMF directions must be between 1 and the layer's {c} channels")
    x = _rows(agent, layer, np.asarray(frames), max_rows, seed)
    rms = np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=0))
    if not rms.any():
        raise JaxinterpError(f"{layer} is never above 0 on these {len(frames)} frames: nothing to factor")
    scale = np.where(rms > 0, 1.0 / np.maximum(rms, _EPS), 0.0)  # every channel's RMS 1 (silent ones stay 0)
    x = (x * scale).astype(np.float32)
    w, h = (np.asarray(a, np.float64) for a in nmf(jnp.asarray(x), k, steps, jax.random.key(seed)))
    explained = 1.0 - float(np.sum((x - w @ h) ** 2)) / float(np.sum(x.astype(np.float64) ** 2))
    mass = w.sum(0) * h.sum(1)  # each part's total in W H
    order = np.argsort(-mass, kind="stable")
    raw = h * scale[None, :]  # (x * scale) . h = x . (scale * h): the direction on unscaled activations
    raw /= np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), _EPS)
    return NMFDirections(
        layer=layer,
        components=raw[order].astype(np.float32),
        explained=explained,
        share=(mass[order] / mass.sum()).astype(np.float32),
        rows=len(x),
    )


def describe(dirs: NMFDirections) -> str:
    """A few lines: the fit, then per direction its share and its heaviest channels (weight in the unit vector)."""
    lines = [
        (
            f"{len(dirs.components)} NMF directions of {dirs.layer} ({dirs.rows:,} frame-position rows): "
            f"{dirs.explained:.1%} of the (clipped, channel-scaled) activations' squared norm reconstructed"
        )
    ]
    for i, (v, share) in enumerate(zip(dirs.components, dirs.share, strict=True)):
        top = np.argsort(-v, kind="stable")[:TOP_CHANNELS]
        lines.append(
            f"  #{i}: {share:.1%} of the total; channels " + ", ".join(f"{c} ({v[c]:.2f})" for c in top)
        )
    return "\n".join(lines)


def save_npz(dirs: NMFDirections, path: str | Path) -> Path:
    """``dirs`` as ``.npz`` (layer, components, share, explained, rows); parent folders are created."""
    return write_npz(path, **{k: np.asarray(v) for k, v in dirs._asdict().items()})
