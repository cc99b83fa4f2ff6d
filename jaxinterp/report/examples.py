"""Dataset-example sheets: one PNG per feature with its top patches (and least-activating ones), values underneath."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from jaxinterp.envs.objects import OBJECT_CLASSES
from jaxinterp.examples.find import ExamplesResult, save_npz
from jaxinterp.examples.objects import objects_at
from jaxinterp.examples.receptive import WHOLE_FRAME
from jaxinterp.report import images

__all__ = ["DEFAULT_COLUMNS", "MIN_PATCH_PIXELS", "examples_sheet", "write_sheets"]

DEFAULT_COLUMNS = 8
"""Patches per row: 16 examples make two rows."""

MIN_PATCH_PIXELS = 96
"""Patches are upscaled (nearest) by the smallest integer that makes them at least this wide: a 3-pixel field of
the first conv would be invisible as is."""


def _label(value: float, frame: int, show_frame: bool, obj: int = -1) -> str:
    if frame < 0:
        return "(none)"  # fewer distinct examples than slots
    text = f"{value:.3g} #{frame}" if show_frame else f"{value:.3g}"
    return f"{text}\n{OBJECT_CLASSES[obj]}" if obj >= 0 else text


def _labels(ranked, j: int, show_frame: bool, objs: np.ndarray | None) -> list[str]:
    """Captions of feature ``j``'s ranked patches; ``objs`` (k,) names the object under each (None: no names)."""
    objs = np.full(ranked.values.shape[1], -1) if objs is None else objs
    return [
        _label(v, f, show_frame, o) for v, f, o in zip(ranked.values[j], ranked.frames[j], objs, strict=True)
    ]


def examples_sheet(
    result: ExamplesResult,
    j: int,
    *,
    scale: int | None = None,
    columns: int = DEFAULT_COLUMNS,
    bottom: bool = True,
    show_frame: bool = False,
    object_maps=None,
) -> np.ndarray:
    """The sheet of feature ``j`` (its row in ``result``): top patches, then the least-activating ones; uint8.

    With ``object_maps`` (the rollout ``Dataset``, or global frame index -> (64, 64) map) each patch also names
    the game object at its position (`jaxinterp.examples.objects.objects_at`).
    """
    p = result.patches.shape[2]
    scale = max(1, math.ceil(MIN_PATCH_PIXELS / p)) if scale is None else scale
    pos = result.positions
    title = f"{result.layer} #{int(result.ids[j])}: top {pos.values.shape[1]} of {result.num_frames} frames"
    if result.diversity:
        title += f" (diversity {result.diversity:g} on {result.diversity_on})"
    parts = [
        images.contact_sheet(
            result.patches[j],
            _labels(pos, j, show_frame, _objects(result, pos, j, object_maps)),
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
                _labels(low, j, show_frame, _objects(result, low, j, object_maps)),
                columns=columns,
                scale=scale,
                title=f"least activating (frame {result.frame_score}, patch at the minimum)",
            )
        )
    return images.stack(parts)


def _objects(result: ExamplesResult, ranked, j: int, object_maps) -> np.ndarray | None:
    """(k,) object classes under feature ``j``'s ranked positions; None without object maps, or for a dense layer,
    whose one position is the whole frame (the largest object in view would name every example)."""
    if object_maps is None or result.receptive_field == WHOLE_FRAME:
        return None
    return objects_at(object_maps, ranked.frames[j], ranked.ys[j], ranked.xs[j], result.receptive_field.jump)


def write_sheets(
    result: ExamplesResult,
    out_dir,
    *,
    scale: int | None = None,
    columns: int = DEFAULT_COLUMNS,
    bottom: bool = True,
    show_frame: bool = False,
    object_maps=None,
    npz: bool = True,
    progress: Callable[[int], None] | None = None,
) -> list[Path]:
    """One PNG per feature (``<layer>_<id>.png``) and, with ``npz``, ``<layer>_examples.npz`` of indices/values."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = images.file_stem(result.layer)
    paths = []
    for j, fid in enumerate(result.ids):
        sheet = examples_sheet(
            result,
            j,
            scale=scale,
            columns=columns,
            bottom=bottom,
            show_frame=show_frame,
            object_maps=object_maps,
        )
        paths.append(images.save_png(out_dir / f"{stem}_{int(fid):04d}.png", sheet))
        if progress is not None:
            progress(1)
    if npz:
        paths.append(save_npz(result, out_dir / f"{stem}_examples.npz"))
    return paths
