"""Feature functions: what the example finders, heatmaps and attributions look at in one layer's activations.

A ``Feature`` maps a layer's NHWC activations to ``(N, H, W, F)`` feature maps with a pure, jittable function: a
channel selection, a direction in channel space (``acts @ v``), or anything else of that shape (an SAE latent),
so every tool here works unchanged on all of them. Dense layers are seen as 1×1 maps.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.envs.stream import batches, stream_rows
from jaxinterp.errors import JaxinterpError
from jaxinterp.models.agent import Agent, preprocess

__all__ = [
    "Feature",
    "as_feature",
    "channels",
    "compute_feature_maps",
    "direction",
    "feature_ids",
    "feature_maps",
    "feature_size",
    "spatial",
    "with_params",
]


class Feature(NamedTuple):
    """``apply(acts (N, H, W, C)) -> (N, H, W, F)`` on layer ``layer``; ``ids`` name the F outputs (None: 0..F-1)."""

    layer: str
    apply: Callable[[jax.Array], jax.Array]
    description: str
    ids: tuple[int, ...] | None = None
    selects_channels: bool = False  # ids are channels of `layer`: checked against its width


def spatial(acts: jax.Array) -> jax.Array:
    """A layer activation as NHWC: dense ``(N, F)`` becomes ``(N, 1, 1, F)`` so it has one position."""
    return acts[:, None, None, :] if acts.ndim == 2 else acts


def _identity(acts: jax.Array) -> jax.Array:
    return acts


@dataclasses.dataclass(frozen=True)
class _Select:
    """``acts[..., idx]``; equal selections compare equal, so jitted steps built on them are reused."""

    idx: tuple[int, ...]

    def __call__(self, acts: jax.Array) -> jax.Array:
        return acts[..., np.asarray(self.idx)]


def channels(layer: str, idx: Sequence[int] | int | None = None) -> Feature:
    """The channels ``idx`` (all if None) of ``layer``, as they are."""
    if idx is None:
        return Feature(layer, _identity, f"{layer} (all channels)")
    idx = (idx,) if isinstance(idx, int | np.integer) else tuple(int(i) for i in idx)
    if not idx:
        raise JaxinterpError(f"channels({layer!r}, ...) got no channel indices; pass None for all channels")
    return Feature(layer, _Select(idx), f"{layer} channels {list(idx)}", idx, selects_channels=True)


def direction(layer: str, v, description: str | None = None) -> Feature:
    """Projections ``acts @ v`` onto the direction(s) ``v``: shape (C,) for one feature, (C, F) for F of them."""
    v = np.asarray(v, np.float32)
    if v.ndim not in (1, 2):
        raise JaxinterpError(f"direction vector must have shape (C,) or (C, F), got {v.shape}")
    mat = v[:, None] if v.ndim == 1 else v
    return Feature(layer, lambda a: a @ mat, description or f"{layer} @ direction{list(v.shape)}")


def as_feature(
    agent: Agent, feature: Feature | str, channel_ids: Sequence[int] | int | None = None
) -> Feature:
    """``feature`` itself, or ``channels(feature, channel_ids)`` for a layer name, with layer and channels checked."""
    if isinstance(feature, str):
        feature = channels(feature, channel_ids)
    elif channel_ids is not None:
        raise JaxinterpError(
            "pass `channels` only with a layer name; a Feature already selects what it reads"
        )
    (layer,) = agent.check_layers([feature.layer])
    if feature.selects_channels:
        for c in feature.ids:
            agent.check_channel(layer, c)
    return feature


def feature_size(agent: Agent, feature: Feature) -> tuple[int, int, int]:
    """``(H, W, F)`` of ``feature``'s maps for one frame (shape inference only, no FLOPs)."""
    shape = agent.layer_shapes[feature.layer]
    acts = jax.ShapeDtypeStruct((1, *shape), jnp.float32)
    out = jax.eval_shape(lambda a: feature.apply(spatial(a)), acts)
    if out.ndim != 4 or out.shape[0] != 1:
        raise JaxinterpError(
            f"feature {feature.description!r} must map (N, H, W, C) to (N, H, W, F), gave {out.shape[1:]} per "
            "frame; return a trailing feature axis (use [..., None] for a single map)"
        )
    return tuple(out.shape[1:])


def feature_ids(agent: Agent, feature: Feature) -> np.ndarray:
    """The F output names of ``feature`` (channel numbers for a channel selection)."""
    f = feature_size(agent, feature)[-1]
    return np.asarray(feature.ids if feature.ids is not None else range(f), np.int64)


def feature_maps(agent: Agent, params, feature: Feature, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(feature maps (N, H, W, F), layer acts (N, H, W, C))`` for images in [0, 1]; pure, jit it around."""
    acts = spatial(agent.forward(params, images)[feature.layer]).astype(jnp.float32)
    return feature.apply(acts).astype(jnp.float32), acts


def with_params(agent: Agent, params) -> Agent:
    """``agent`` with ``params`` in place of its own (None: ``agent`` itself), for the jitted steps that take the
    agent as their argument."""
    return agent if params is None else agent.replace(params)


@functools.partial(jax.jit, static_argnames="feature")
def _maps(agent: Agent, obs: jax.Array, feature: Feature) -> jax.Array:
    return feature_maps(agent, agent.params, feature, preprocess(obs))[0]


def compute_feature_maps(agent: Agent, feature: Feature | str, frames, *, params=None, batch_size: int = 256):
    """Feature maps (N, H, W, F) as numpy for uint8 frames, in batches of ``batch_size``."""
    feature = as_feature(agent, feature)
    agent = with_params(agent, params)
    frames = np.asarray(frames)
    if not len(frames):
        return np.zeros((0, *feature_size(agent, feature)), np.float32)
    # Unpadded: the values stay exactly those of one call per batch of frames (see `batches`).
    pieces = batches([(frames,)], batch_size, pad=False)
    return stream_rows(pieces, lambda obs: _maps(agent, obs, feature=feature))
