"""Arrays to pictures: float-to-uint8, upscaling, strips, labelled contact sheets, and heatmaps coloured and
blended over frames. Only numpy, Pillow and a matplotlib colormap: every job writes its pictures with these.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from jaxinterp.errors import JaxinterpError

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_CMAP",
    "DEFAULT_SCALE",
    "DIVERGING_CMAP",
    "SALIENCY_ALPHA",
    "SALIENCY_PERCENTILE",
    "colorize",
    "contact_sheet",
    "file_stem",
    "overlay",
    "overlay_grid",
    "save_gif",
    "save_png",
    "side_by_side",
    "stack",
    "to_uint8",
    "upscale",
    "write_contact_sheet",
]

GAP = 4
"""Pixels between images in strips and sheets."""
BACKGROUND = 255
"""White between images: the optimized images are rarely white, so cells stay easy to tell apart."""
_TEXT = (0, 0, 0)

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


def to_uint8(images) -> np.ndarray:
    """Float images in [0, 1] (clipped; NaN becomes 0) or uint8 images, as uint8."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    if not np.issubdtype(images.dtype, np.floating):
        raise JaxinterpError(f"images must be uint8 or float in [0, 1], got dtype {images.dtype}")
    return np.round(np.clip(np.nan_to_num(images, nan=0.0), 0.0, 1.0) * 255.0).astype(np.uint8)


def _check_hwc(image: np.ndarray, what: str = "image") -> None:
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise JaxinterpError(f"{what} must be (H, W, 3), got shape {image.shape}")


def upscale(image, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling of (..., H, W, C) by an integer ``scale`` (pixels stay crisp squares)."""
    if not isinstance(scale, int | np.integer) or scale < 1:
        raise JaxinterpError(f"`scale` (={scale!r}) must be an int >= 1")
    image = np.asarray(image)
    return image.repeat(scale, axis=-3).repeat(scale, axis=-2)


def side_by_side(images, *, gap: int = GAP, scale: int = 1) -> np.ndarray:
    """K images (K, H, W, 3) as one uint8 strip, left to right, ``gap`` background pixels apart."""
    images = upscale(to_uint8(images), scale)
    if images.ndim != 4:
        raise JaxinterpError(f"images must be (K, H, W, 3), got shape {images.shape}")
    k, h, w, c = images.shape
    strip = np.full((h, k * w + (k - 1) * gap, c), BACKGROUND, np.uint8)
    for i, im in enumerate(images):
        strip[:, i * (w + gap) : i * (w + gap) + w] = im
    return strip


def stack(images: Sequence) -> np.ndarray:
    """Images (H_i, W_i, 3) of any sizes one above the other, left-aligned on the background; uint8."""
    images = [to_uint8(im) for im in images]
    for im in images:
        _check_hwc(im)
    out = np.full(
        (sum(im.shape[0] for im in images), max(im.shape[1] for im in images), 3), BACKGROUND, np.uint8
    )
    y = 0
    for im in images:
        out[y : y + im.shape[0], : im.shape[1]] = im[..., :3]
        y += im.shape[0]
    return out


def file_stem(name: str) -> str:
    """A layer name safe in file and folder names: ``conv_seqs.2.res_block1`` -> ``conv_seqs_2_res_block1``."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)


def save_png(path: str | Path, image) -> Path:
    """Write one image (H, W, 3), float in [0, 1] or uint8, as a PNG (parent folders created)."""
    image = to_uint8(image)
    _check_hwc(image)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(path)
    return path


def contact_sheet(
    images,
    labels: Sequence[str] | None = None,
    *,
    columns: int = 8,
    scale: int = 1,
    title: str | None = None,
    gap: int = GAP,
) -> np.ndarray:
    """A grid of N images (N, H, W, 3) in rows of ``columns``, each with its label (lines split at "\\n")
    underneath; uint8 (H', W', 3)."""
    images = upscale(to_uint8(images), scale)
    if images.ndim != 4 or len(images) == 0:
        raise JaxinterpError(f"contact sheet needs images (N, H, W, 3) with N >= 1, got shape {images.shape}")
    if labels is not None and len(labels) != len(images):
        raise JaxinterpError(f"got {len(labels)} labels for {len(images)} images")
    font = ImageFont.load_default()
    lines = max((str(label).count("\n") + 1 for label in labels), default=1) if labels is not None else 0
    text_h = _text_height(font) * lines
    title_h = _text_height(font) + gap if title else 0
    n, h, w, _ = images.shape
    cols = max(1, min(columns, n))
    rows = math.ceil(n / cols)
    cell_w, cell_h = w + gap, h + text_h + gap
    sheet = Image.new("RGB", (cols * cell_w + gap, rows * cell_h + gap + title_h), (BACKGROUND,) * 3)
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((gap, gap), title, fill=_TEXT, font=font)
    for i, im in enumerate(images):
        x, y = gap + (i % cols) * cell_w, title_h + gap + (i // cols) * cell_h
        sheet.paste(Image.fromarray(im[..., :3]), (x, y))
        if labels is not None:
            draw.text((x, y + h + 1), str(labels[i]), fill=_TEXT, font=font)
    return np.asarray(sheet)


def save_gif(path: str | Path, frames, *, ms: int = 100) -> Path:
    """uint8 frames (T, H, W, 3) as a looping GIF, ``ms`` milliseconds a frame."""
    frames = to_uint8(frames)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    first, *rest = (Image.fromarray(f) for f in frames)
    first.save(path, save_all=True, append_images=rest, duration=ms, loop=0)
    return path


def write_contact_sheet(path: str | Path, images, labels: Sequence[str] | None = None, **kwargs) -> Path:
    """`contact_sheet` written as a PNG."""
    return save_png(path, contact_sheet(images, labels, **kwargs))


def _text_height(font) -> int:
    top, bottom = font.getbbox("0123456789:-.")[1::2]
    return int(bottom - top) + 4


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
