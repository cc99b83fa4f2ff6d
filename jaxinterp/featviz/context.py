"""In-context feature visualization: optimize a small patch pasted into real frames, not a whole image.

A whole optimized frame is far from anything the agent saw, and for this agent it comes out as clouds of colour.
Here the image is an ``size``×``size`` patch (a sprite or two of Heist) placed over one position's receptive-field
centre in frames of the agent's own play: everything around it is real, so what the patch must add is an object
in its context. Each step pastes every facet's patch into ``batch`` random frames, shifted by up to ``jitter``
pixels (the robustness that the whole-image transform chain gives elsewhere), and the objective is averaged over
them; values are measured on the first ``measure_frames`` frames, unshifted.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.errors import JaxinterpError
from jaxinterp.models.agent import Agent, check_obs, preprocess
from jaxinterp.models.receptive import receptive_field

__all__ = [
    "DEFAULT_BATCH",
    "DEFAULT_JITTER",
    "DEFAULT_SIZE",
    "MEASURE_FRAMES",
    "Context",
    "ContextSpec",
    "make_context",
]

DEFAULT_SIZE = 16
"""Patch side in pixels: two Heist maze tiles (a key, lock or the agent fits in one), one last-stage cell each way."""

DEFAULT_JITTER = 4
"""Largest shift of the patch per step, in pixels: half a last-stage cell, so the neuron under it stays the same."""

DEFAULT_BATCH = 8
"""Frames each facet's patch is pasted into per step: the value is their mean, so no single background wins."""

MEASURE_FRAMES = 32
"""Frames (the first of the bank) that a finished patch is measured on, pasted exactly at its place."""


@dataclasses.dataclass(frozen=True, eq=False)
class Context:
    """Real frames and where a patch goes in them; build with `make_context`. Compared and hashed by identity.

    A pytree whose one leaf is ``frames``: jitted functions take a context as an argument, so its frames (tens of
    MB) are not baked into the compiled program as a constant."""

    frames: jax.Array  # float32 (N, 64, 64, 3) in [0, 1]
    top_left: tuple[int, int]  # (y, x) of the patch's unshifted place
    size: int
    jitter: int
    batch: int

    @property
    def measure_count(self) -> int:
        return min(MEASURE_FRAMES, self.frames.shape[0])

    def paste(self, patches: jax.Array, keys: jax.Array | None = None) -> jax.Array:
        """(K, size, size, 3) patches -> (K * batch, 64, 64, 3) frames holding them, facet-major.

        With ``keys`` ((K,) typed keys) each facet draws ``batch`` frames and shifts; without, every patch goes
        into the first `measure_count` frames at its exact place (then K * measure_count frames).
        """
        k, s = patches.shape[0], self.size
        if patches.shape[1:] != (s, s, 3):
            raise JaxinterpError(
                f"context patches must be {s}x{s}x3 (the image parameterization's size), got {patches.shape[1:]}"
            )
        if keys is None:
            index = jnp.broadcast_to(jnp.arange(self.measure_count), (k, self.measure_count))
            shift = jnp.zeros((*index.shape, 2), jnp.int32)
        else:

            def draw(key):
                k_frames, k_shift = jax.random.split(key)
                n = self.frames.shape[0]
                return (
                    jax.random.randint(k_frames, (self.batch,), 0, n),
                    jax.random.randint(k_shift, (self.batch, 2), -self.jitter, self.jitter + 1),
                )

            index, shift = jax.vmap(draw)(keys)
        size = self.frames.shape[1]
        corner = jnp.clip(jnp.asarray(self.top_left) + shift, 0, size - s)  # (K, B, 2), kept inside the frame

        def one(patch, i, yx):
            return jax.lax.dynamic_update_slice(self.frames[i], patch, (yx[0], yx[1], 0))

        per_facet = jax.vmap(jax.vmap(one, (None, 0, 0)), (0, 0, 0))(patches, index, corner)
        return per_facet.reshape(-1, *per_facet.shape[2:])


jax.tree_util.register_dataclass(
    Context, data_fields=["frames"], meta_fields=["top_left", "size", "jitter", "batch"]
)


def make_context(
    frames,
    center: tuple[float, float],
    *,
    size: int = DEFAULT_SIZE,
    jitter: int = DEFAULT_JITTER,
    batch: int = DEFAULT_BATCH,
) -> Context:
    """A `Context` over uint8 ``frames`` (N, 64, 64, 3), its patch centred on pixel coordinates ``center`` (y, x).

    ``center`` is continuous (pixel p spans [p, p + 1)), as `ReceptiveField.center` gives it; a patch that would
    cross the frame's edge is moved inside.
    """
    frames = check_obs(frames)
    if len(frames) == 0:
        raise JaxinterpError("no context frames: give at least one frame of the agent's play")
    side = frames.shape[1]
    for name, value, low in (("size", size, 1), ("jitter", jitter, 0), ("batch", batch, 1)):
        if not isinstance(value, int | np.integer) or value < low:
            raise JaxinterpError(f"context {name} (={value!r}) must be an int >= {low}")
    if size > side:
        raise JaxinterpError(f"context size {size} is larger than the {side}-px frame")
    y, x = (int(np.clip(round(float(c) - size / 2), 0, side - size)) for c in center)
    return Context(preprocess(frames), (y, x), int(size), int(jitter), int(batch))


@dataclasses.dataclass(frozen=True)
class ContextSpec:
    """A context before its layer and frames are known (what `visualize_layers` and the CLI take)."""

    size: int = DEFAULT_SIZE
    jitter: int = DEFAULT_JITTER
    batch: int = DEFAULT_BATCH
    at: tuple[int, int] | None = None
    """(y, x): the layer position whose receptive-field centre the patch covers; None, the centre position
    (h // 2, w // 2), where `objectives.neuron` looks by default."""

    def position(self, agent: Agent, layer: str) -> tuple[int, int]:
        """The (y, x) position in ``layer`` the patch sits on, checked against the layer's size."""
        shape = agent.layer_shapes[layer]
        if len(shape) != 3:
            raise JaxinterpError(
                f"layer {layer!r} has no positions (shape {shape}): a context needs a spatial layer"
            )
        h, w = shape[:2]
        y, x = self.at if self.at is not None else (h // 2, w // 2)
        if not (0 <= y < h and 0 <= x < w):
            raise JaxinterpError(
                f"context position (y={y}, x={x}) is outside layer {layer!r}, which is {h}x{w}"
            )
        return int(y), int(x)

    def build(self, agent: Agent, layer: str, frames) -> Context:
        """The `Context` over ``frames`` for ``layer``: the patch centred on `position`'s receptive field."""
        y, x = self.position(agent, layer)
        rf = receptive_field(agent, layer)
        return make_context(
            frames, (rf.center(y), rf.center(x)), size=self.size, jitter=self.jitter, batch=self.batch
        )
