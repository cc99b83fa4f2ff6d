"""An objective's values on the agent's own frames: the yardstick a visualization's image is measured against (does
it drive the objective past what real play ever does?)."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.envs.stream import batches, stream_rows
from jaxinterp.featviz import objectives as obj
from jaxinterp.models.agent import Agent, check_obs, preprocess

__all__ = ["PERCENTILES", "REAL_BATCH", "real_frame_values", "real_percentiles"]

PERCENTILES = (99.0, 99.9)
"""Real-frame percentiles each visualization is compared with."""
REAL_BATCH = 256
"""Frames per forward pass."""


@functools.partial(jax.jit, static_argnames="objective")
def _values(agent: Agent, obs: jax.Array, index: jax.Array, objective: obj.Objective) -> jax.Array:
    """The objective for each channel ``index`` (C,) on uint8 frames (N, 64, 64, 3): (C, N)."""
    images = preprocess(obs)
    acts = obj.read_acts(agent, agent.forward(agent.params, images), objective.layers)
    return jax.vmap(lambda i: objective.fn(acts, images, i))(index)


def real_frame_values(
    agent: Agent, objective: obj.Objective, channels: Sequence[int], frames, *, batch_size: int = REAL_BATCH
) -> np.ndarray:
    """The objective on real uint8 frames for each channel index: (C, N), one forward per batch of frames."""
    objective.validate(agent)
    check_obs(frames)
    index = jnp.asarray(channels, jnp.int32)
    # Unpadded: the values stay exactly those of one call per batch of frames (see `batches`).
    pieces = batches([(np.asarray(frames),)], batch_size, pad=False)
    return stream_rows(pieces, lambda obs: _values(agent, obs, index, objective=objective), axis=1)


def real_percentiles(agent: Agent, objective: obj.Objective, channels: Sequence[int], frames) -> np.ndarray:
    """The `PERCENTILES` of each channel's values on ``frames``: (len(PERCENTILES), C) float32."""
    values = real_frame_values(agent, objective, channels, frames)
    return np.percentile(values, PERCENTILES, axis=1).astype(np.float32)
