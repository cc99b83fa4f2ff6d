"""Spatial heatmaps over frames: feature maps upsampled to 64×64 (aligned on receptive-field centres), coloured
with a matplotlib colormap and blended over the frame (``jaxinterp.report.heatmaps`` writes them as PNGs).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from jaxinterp.errors import JaxinterpError
from jaxinterp.examples.receptive import FRAME_SIZE, ReceptiveField

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_CMAP",
    "DEFAULT_SCALE",
    "DIVERGING_CMAP",
    "SALIENCY_ALPHA",
    "SALIENCY_PERCENTILE",
    "colorize",
    "interpolation_matrix",
    "overlay",
    "overlay_grid",
    "upsample",
]

Method = Literal["nearest", "bilinear"]

DEFAULT_CMAP = "inferno"
"""Perceptually uniform and dark at zero, so inactive regions leave the frame readable."""

DIVERGING_CMAP = "RdBu_r"
"""For signed maps (attributions, pre-relu layers): white at zero, red positive, blue negative."""

DEFAULT_ALPHA = 0.6
"""Heat opacity over the frame: enough to read the map, little enough to see the objects under it."""

SALIENCY_PERCENTILE = 99.0
"""Saliency colours saturate at this percentile of the map's magnitude (captum's default clips the top 2%): pixel
attributions are peaky, and scaled to their single largest pixel everything else is invisible."""

SALIENCY_ALPHA = 0.9
"""Saliency opacity where the map saturates: weighted overlays leave unattributed pixels clear, so the peaks can be
nearly opaque."""

DEFAULT_SCALE = 4
"""PNGs are upscaled (nearest) this much: a 64×64 frame is too small to inspect."""


def interpolation_matrix(n: int, rf: ReceptiveField, size: int = FRAME_SIZE, method: Method = "bilinear"):
    """(size, n) weights taking n positions to ``size`` pixels, position i placed at its field's centre.

    Pixel p (spanning [p, p + 1)) reads position ``u = (p + 0.5 - centre(0)) / jump``, clamped at the borders.
    """
    u = (np.arange(size) + 0.5 - rf.center(0)) / rf.jump
    u = np.clip(u, 0, n - 1)
    w = np.zeros((size, n), np.float32)
    rows = np.arange(size)
    if method == "nearest":
        w[rows, np.floor(u + 0.5).astype(int).clip(0, n - 1)] = 1
    elif method == "bilinear":
        lo = np.floor(u).astype(int).clip(0, n - 1)
        hi = np.minimum(lo + 1, n - 1)
        frac = (u - lo).astype(np.float32)
        np.add.at(w, (rows, lo), 1 - frac)
        np.add.at(w, (rows, hi), frac)
    else:
        raise JaxinterpError(f"upsampling method must be 'nearest' or 'bilinear', got {method!r}")
    return w


def upsample(
    maps, rf: ReceptiveField | None = None, *, size: int = FRAME_SIZE, method: Method = "bilinear"
) -> np.ndarray:
    """Maps (N, H, W) or (N, H, W, F) to (N, size, size[, F]); with ``rf``, each position sits on its field's centre.

    Without ``rf`` the map is stretched over the frame like an image resize (cell centres evenly spaced).
    """
    maps = np.asarray(maps, np.float32)
    squeeze = maps.ndim == 3
    maps = maps[..., None] if squeeze else maps
    if maps.ndim != 4 or maps.shape[1] != maps.shape[2]:
        raise JaxinterpError(f"maps must be (N, H, W) or (N, H, W, F) with H == W, got {maps.shape}")
    h = maps.shape[1]
    if rf is None:
        jump = size / h
        rf = ReceptiveField(jump=jump, start=0, size=jump)
    w = interpolation_matrix(h, rf, size, method)
    out = np.einsum("ph,nhwf,qw->npqf", w, maps, w)
    return out[..., 0] if squeeze else out


def _range(heat: np.ndarray, vmin, vmax, symmetric: bool, percentile: float = 100.0) -> tuple[float, float]:
    """Colour range: given bounds win; else [min(0, lowest), top], or ±top of |heat| when symmetric, where top is
    the ``percentile`` of the values (100: the largest)."""
    finite = heat[np.isfinite(heat)]
    if not finite.size:
        finite = np.zeros(1, np.float32)
    if symmetric:
        m = float(np.percentile(np.abs(finite), percentile))
        return (-m if vmin is None else vmin), (m if vmax is None else vmax)
    lo = min(0.0, float(finite.min())) if vmin is None else vmin
    hi = float(np.percentile(finite, percentile)) if vmax is None else vmax
    return lo, hi


def _scaled(heat: np.ndarray, vmin, vmax, symmetric: bool, percentile: float) -> np.ndarray:
    """``heat`` mapped to [0, 1] over its colour range (shared by all maps given)."""
    lo, hi = _range(heat, vmin, vmax, symmetric, percentile)
    return np.clip((heat - lo) / max(hi - lo, 1e-12), 0, 1)


def _colors(t: np.ndarray, cmap: str) -> np.ndarray:
    """uint8 RGB (..., 3) of values ``t`` in [0, 1] through ``cmap``."""
    import matplotlib  # deferred: importing matplotlib costs about a second

    lut = (matplotlib.colormaps[cmap](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)
    return lut[np.nan_to_num(t * 255).round().astype(np.int64)]


def colorize(
    heat,
    *,
    cmap: str = DEFAULT_CMAP,
    vmin=None,
    vmax=None,
    symmetric: bool = False,
    percentile: float = 100.0,
) -> np.ndarray:
    """uint8 RGB (..., 3) of ``heat`` (...) through ``cmap``; the range is shared by all maps given (comparable)
    and saturates at the ``percentile`` of their values."""
    return _colors(_scaled(np.asarray(heat, np.float32), vmin, vmax, symmetric, percentile), cmap)


def overlay(
    frames,
    heat,
    *,
    alpha: float = DEFAULT_ALPHA,
    weighted: bool = False,
    cmap: str = DEFAULT_CMAP,
    vmin=None,
    vmax=None,
    symmetric: bool = False,
    percentile: float = 100.0,
) -> np.ndarray:
    """uint8 frames (N, 64, 64, 3) with ``heat`` (N, 64, 64) blended over them, coloured as `colorize`;
    ``weighted`` scales the opacity by the heat's magnitude (saliency: the frame stays clear where nothing is
    attributed)."""
    frames = np.asarray(frames)
    heat = np.asarray(heat, np.float32)
    if heat.shape != frames.shape[:-1]:
        raise JaxinterpError(
            f"heat {heat.shape} must match the frames' pixels {frames.shape[:-1]}; upsample it"
        )
    t = _scaled(heat, vmin, vmax, symmetric, percentile)
    colors = _colors(t, cmap).astype(np.float32)
    # Magnitude in [0, 1]: a symmetric range puts zero at t = 0.5.
    a = alpha * (np.abs(2 * t - 1) if symmetric else t)[..., None] if weighted else np.float32(alpha)
    return ((1 - a) * frames.astype(np.float32) + a * colors).round().astype(np.uint8)


def overlay_grid(frames, heat, *, scale: int = DEFAULT_SCALE, **overlay_kwargs) -> np.ndarray:
    """One image: the frames in a row, their overlays in the row below, upscaled by ``scale`` (nearest)."""
    frames = np.asarray(frames)
    top = np.concatenate(list(frames), axis=1)
    bottom = np.concatenate(list(overlay(frames, heat, **overlay_kwargs)), axis=1)
    grid = np.concatenate([top, bottom], axis=0)
    return grid.repeat(scale, 0).repeat(scale, 1)
