"""Contact sheets: one PNG per feature with its top patches (and least-activating ones), each value printed under it."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from jaxinterp.examples.find import ExamplesResult, save_npz
from jaxinterp.examples.heatmap import file_stem

__all__ = ["DEFAULT_COLUMNS", "MIN_PATCH_PIXELS", "contact_sheet", "write_sheets"]

DEFAULT_COLUMNS = 8
"""Patches per row: 16 examples make two rows."""

MIN_PATCH_PIXELS = 96
"""Patches are upscaled (nearest) by the smallest integer that makes them at least this wide: a 3-pixel field of
the first conv would be invisible as is."""

_GAP = 4  # pixels between patches
_BACKGROUND = (255, 255, 255)
_TEXT = (0, 0, 0)


def _text_height(font) -> int:
    top, bottom = font.getbbox("0.0-")[1::2]
    return int(bottom - top) + 4


def _grid(patches: np.ndarray, labels: list[str], scale: int, columns: int, font) -> Image.Image:
    """Patches (K, P, P, 3) in rows of ``columns``, each label under its patch."""
    k, p = len(patches), patches.shape[1] * scale
    text_h = _text_height(font)
    cols = max(1, min(columns, k))
    rows = max(1, math.ceil(k / cols))
    cell_w, cell_h = p + _GAP, p + text_h + _GAP
    sheet = Image.new("RGB", (cols * cell_w + _GAP, rows * cell_h + _GAP), _BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for i, (patch, label) in enumerate(zip(patches, labels, strict=True)):
        x, y = _GAP + (i % cols) * cell_w, _GAP + (i // cols) * cell_h
        sheet.paste(Image.fromarray(patch.repeat(scale, 0).repeat(scale, 1)), (x, y))
        draw.text((x, y + p + 1), label, fill=_TEXT, font=font)
    return sheet


def _titled(title: str, body: Image.Image, font) -> Image.Image:
    h = _text_height(font) + _GAP
    out = Image.new("RGB", (body.width, body.height + h), _BACKGROUND)
    ImageDraw.Draw(out).text((_GAP, _GAP // 2), title, fill=_TEXT, font=font)
    out.paste(body, (0, h))
    return out


def _stack(images: list[Image.Image]) -> Image.Image:
    out = Image.new("RGB", (max(i.width for i in images), sum(i.height for i in images)), _BACKGROUND)
    y = 0
    for image in images:
        out.paste(image, (0, y))
        y += image.height
    return out


def _label(value: float, frame: int, show_frame: bool) -> str:
    if frame < 0:
        return "(none)"  # fewer distinct examples than slots
    return f"{value:.3g} #{frame}" if show_frame else f"{value:.3g}"


def contact_sheet(
    result: ExamplesResult,
    j: int,
    *,
    scale: int | None = None,
    columns: int = DEFAULT_COLUMNS,
    bottom: bool = True,
    show_frame: bool = False,
) -> Image.Image:
    """The sheet of feature ``j`` (its row in ``result``): top patches, then the least-activating ones."""
    font = ImageFont.load_default()
    p = result.patches.shape[2]
    scale = max(1, math.ceil(MIN_PATCH_PIXELS / p)) if scale is None else scale
    pos = result.positions
    labels = [_label(v, f, show_frame) for v, f in zip(pos.values[j], pos.frames[j], strict=True)]
    name = f"{result.layer} #{int(result.ids[j])}"
    parts = [
        _titled(
            f"{name}: top {len(labels)} of {result.num_frames} frames"
            + (f" (diversity {result.diversity:g} on {result.diversity_on})" if result.diversity else ""),
            _grid(result.patches[j], labels, scale, columns, font),
            font,
        )
    ]
    if bottom and result.bottom_patches.shape[1]:
        low = result.bottom
        labels = [_label(v, f, show_frame) for v, f in zip(low.values[j], low.frames[j], strict=True)]
        parts.append(
            _titled(
                f"least activating (frame {result.frame_score}, patch at the minimum)",
                _grid(result.bottom_patches[j], labels, scale, columns, font),
                font,
            )
        )
    return _stack(parts)


def write_sheets(
    result: ExamplesResult,
    out_dir,
    *,
    scale: int | None = None,
    columns: int = DEFAULT_COLUMNS,
    bottom: bool = True,
    show_frame: bool = False,
    npz: bool = True,
    progress: Callable[[int], None] | None = None,
) -> list[Path]:
    """One PNG per feature (``<layer>_<id>.png``) and, with ``npz``, ``<layer>_examples.npz`` of indices/values."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = file_stem(result.layer)
    paths = []
    for j, fid in enumerate(result.ids):
        path = out_dir / f"{stem}_{int(fid):04d}.png"
        contact_sheet(result, j, scale=scale, columns=columns, bottom=bottom, show_frame=show_frame).save(
            path
        )
        paths.append(path)
        if progress is not None:
            progress(1)
    if npz:
        paths.append(save_npz(result, out_dir / f"{stem}_examples.npz"))
    return paths
