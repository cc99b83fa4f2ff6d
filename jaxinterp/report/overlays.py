"""Heatmap and saliency PNGs: frames in a row above their coloured overlays (colours from ``jaxinterp.render``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxinterp.examples.attribution import INPUT, saliency
from jaxinterp.examples.features import Feature, as_feature, compute_feature_maps, feature_ids
from jaxinterp.models.agent import Agent
from jaxinterp.models.receptive import Method, receptive_field, upsample
from jaxinterp.render import (
    DEFAULT_SCALE,
    DIVERGING_CMAP,
    SALIENCY_ALPHA,
    SALIENCY_PERCENTILE,
    file_stem,
    overlay_grid,
    save_png,
)

__all__ = ["write_feature_heatmaps", "write_overlays", "write_saliency"]


def write_overlays(path, frames, heat, *, scale: int = DEFAULT_SCALE, **overlay_kwargs) -> Path:
    """Write ``overlay_grid`` of frames (N, 64, 64, 3) and heat (N, 64, 64) as one PNG."""
    return save_png(path, overlay_grid(frames, heat, scale=scale, **overlay_kwargs))


def write_feature_heatmaps(
    agent: Agent,
    feature: Feature | str,
    frames,
    out_dir,
    *,
    channels: Sequence[int] | int | None = None,
    method: Method = "bilinear",
    params=None,
    symmetric: bool | None = None,
    **overlay_kwargs,
) -> list[Path]:
    """One PNG per feature: ``frames`` (uint8, N ≤ a dozen) above the feature's heatmap over each of them.

    ``symmetric`` (default: whether any map is negative) centres a diverging colormap on zero.
    """
    feature = as_feature(agent, feature, channels)
    maps = compute_feature_maps(agent, feature, frames, params=params)  # (N, H, W, F)
    heat = upsample(maps, receptive_field(agent, feature.layer), method=method)
    symmetric = bool((maps < 0).any()) if symmetric is None else symmetric
    if symmetric:
        overlay_kwargs.setdefault("cmap", DIVERGING_CMAP)
    out_dir = Path(out_dir)
    return [
        write_overlays(
            out_dir / f"{file_stem(feature.layer)}_{int(fid):04d}.png",
            frames,
            heat[..., j],
            symmetric=symmetric,
            **overlay_kwargs,
        )
        for j, fid in enumerate(feature_ids(agent, feature))
    ]


def write_saliency(
    path, agent: Agent, frames, attributions, *, layer: str = INPUT, signed: bool = False, **overlay_kwargs
) -> Path:
    """PNG of the frames above their saliency overlays (``layer``'s map placed by its receptive fields), coloured up
    to the map's ``SALIENCY_PERCENTILE`` and opaque in proportion to it, so the frame shows where nothing is."""
    heat = saliency(attributions, signed=signed)
    rf = receptive_field(agent, layer)
    if heat.shape[1:] != (64, 64):
        heat = upsample(heat, rf, method=overlay_kwargs.pop("method", "bilinear"))
    if signed:
        overlay_kwargs.setdefault("cmap", DIVERGING_CMAP)
    overlay_kwargs.setdefault("percentile", SALIENCY_PERCENTILE)
    overlay_kwargs.setdefault("weighted", True)
    overlay_kwargs.setdefault("alpha", SALIENCY_ALPHA)
    return write_overlays(path, np.asarray(frames), heat, symmetric=signed, **overlay_kwargs)
