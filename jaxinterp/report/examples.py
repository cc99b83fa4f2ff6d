"""Dataset-example sheets: one PNG per feature with its top patches (and least-activating ones), values underneath."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from jaxinterp.examples.find import ExamplesResult, save_npz
from jaxinterp.report import images

__all__ = ["DEFAULT_COLUMNS", "MIN_PATCH_PIXELS", "examples_sheet", "write_sheets"]

DEFAULT_COLUMNS = 8
"""Patches per row: 16 examples make two rows."""

MIN_PATCH_PIXELS = 96
"""Patches are upscaled (nearest) by the smallest integer that makes them at least this wide: a 3-pixel field of
the first conv would be invisible as is."""


def _label(value: float, frame: int, show_frame: bool) -> str:
    if frame < 0:
        return "(none)"  # fewer distinct examples than slots
    return f"{value:.3g} #{frame}" if show_frame else f"{value:.3g}"


def examples_sheet(
    result: ExamplesResult,
    j: int,
    *,
    scale: int | None = None,
    columns: int = DEFAULT_COLUMNS,
    bottom: bool = True,
    show_frame: bool = False,
) -> np.ndarray:
    """The sheet of feature ``j`` (its row in ``result``): top patches, then the least-activating ones; uint8."""
    p = result.patches.shape[2]
    scale = max(1, math.ceil(MIN_PATCH_PIXELS / p)) if scale is None else scale
    pos = result.positions
    title = f"{result.layer} #{int(result.ids[j])}: top {pos.values.shape[1]} of {result.num_frames} frames"
    if result.diversity:
        title += f" (diversity {result.diversity:g} on {result.diversity_on})"
    parts = [
        images.contact_sheet(
            result.patches[j],
            [_label(v, f, show_frame) for v, f in zip(pos.values[j], pos.frames[j], strict=True)],
            columns=columns,
            scale=scale,
            title=title,
        )
    ]
    if bottom and result.bottom_patches.shape[1]:
        low = result.bottom
        parts.append(
            images.contact_sheet(
                result.bottom_patches[j],
                [_label(v, f, show_frame) for v, f in zip(low.values[j], low.frames[j], strict=True)],
                columns=columns,
                scale=scale,
                title=f"least activating (frame {result.frame_score}, patch at the minimum)",
            )
        )
    return images.stack(parts)


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
    stem = images.file_stem(result.layer)
    paths = []
    for j, fid in enumerate(result.ids):
        sheet = examples_sheet(result, j, scale=scale, columns=columns, bottom=bottom, show_frame=show_frame)
        paths.append(images.save_png(out_dir / f"{stem}_{int(fid):04d}.png", sheet))
        if progress is not None:
            progress(1)
    if npz:
        paths.append(save_npz(result, out_dir / f"{stem}_examples.npz"))
    return paths
