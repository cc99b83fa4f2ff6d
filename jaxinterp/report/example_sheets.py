"""Dataset-example sheets: one PNG per feature with its top patches (and least-activating ones), values underneath."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from jaxinterp import render as images
from jaxinterp.atomic import atomic_path
from jaxinterp.envs.ground_truth import OBJECT_CLASSES
from jaxinterp.examples.find import ExamplesResult, save_npz
from jaxinterp.examples.object_response import objects_at
from jaxinterp.examples.patches import patch_origin
from jaxinterp.examples.spatial import SpatialExamples, cell_boxes, choose, default_reuse
from jaxinterp.models.receptive import FRAME_SIZE, WHOLE_FRAME, ReceptiveField

__all__ = [
    "BOXED_FIELD",
    "BOX_COLOR",
    "CHECKER",
    "DEFAULT_COLUMNS",
    "MIN_PATCH_PIXELS",
    "OVERVIEW_PIXELS",
    "boxes_position",
    "covers_frame",
    "example_views",
    "examples_sheet",
    "mosaic",
    "overview_sheet",
    "top_strip",
    "write_sheets",
    "write_spatial",
]

DEFAULT_COLUMNS = 8
"""Patches per row: 16 examples make two rows."""

SPATIAL_SCALE = 4
"""Mosaics are upscaled 4x (256 px): Heist's keys and locks are 6-10 pixels wide in the 64-pixel frame."""

OVERVIEW_PIXELS = 48
"""Views in a layer's overview are upscaled to at least this width: one row per feature, a glance, not a page."""

MIN_PATCH_PIXELS = 96
"""Patches are upscaled (nearest) by the smallest integer that makes them at least this wide: a 3-pixel field of
the first conv would be invisible as is."""


BOX_COLOR = (255, 0, 255)
"""Outline of the position's cell on large views: magenta, a colour Heist never draws."""

BOXED_FIELD = FRAME_SIZE // 2
"""Fields at least this wide (IMPALA's second and third stages: 61 and 141 px) get their position's cell outlined:
in a view that wide the eye cannot find the centre, and the object under it is what the value is about."""


def covers_frame(rf: ReceptiveField) -> bool:
    """Whether every position's receptive field spans the whole frame (and more): true of IMPALA's last stage
    (141 pixels), where a receptive-field patch is the frame, small, in a wide black border."""
    return rf != WHOLE_FRAME and rf.start <= 0 and rf.size >= FRAME_SIZE - rf.start


def boxes_position(rf: ReceptiveField) -> bool:
    """Whether views of this field get the position's cell outlined (spatial fields of ``BOXED_FIELD`` px or more)."""
    return rf != WHOLE_FRAME and rf.size >= BOXED_FIELD


def _view_size(result: ExamplesResult) -> int:
    """Width of the views `example_views` shows before upscaling: the frame, or the patches."""
    return FRAME_SIZE if covers_frame(result.receptive_field) else result.patches.shape[2]


def example_views(result: ExamplesResult, ranked, patches: np.ndarray, j: int, scale: int) -> np.ndarray:
    """Feature ``j``'s examples as shown, upscaled (k, S·scale, S·scale, 3): its ``patches`` (k, P, P, 3), or the
    whole frames where the fields cover the frame (`covers_frame`); fields of ``BOXED_FIELD`` px or more get the
    position's cell (``jump`` pixels around the field's centre) outlined in ``BOX_COLOR``."""
    rf, line = result.receptive_field, max(1, scale // 2)
    whole = covers_frame(rf)
    out = []
    for f, y, x, patch in zip(ranked.frames[j], ranked.ys[j], ranked.xs[j], patches[j], strict=True):
        base = np.zeros((FRAME_SIZE, FRAME_SIZE, 3), np.uint8) if whole else patch
        if whole and f >= 0:
            base = result.frames[int(f)]
        view = images.upscale(base, scale)
        if f >= 0 and boxes_position(rf):
            origin = np.zeros(2, int) if whole else patch_origin(rf, np.array([y, x]), len(patch))
            y0, x0 = np.floor(rf.center(np.array([y, x])) - rf.jump / 2).astype(int) - origin
            y0, y1, x0, x1 = (np.clip(v * scale, 0, len(view)) for v in (y0, y0 + rf.jump, x0, x0 + rf.jump))
            view = view.copy()
            for ys, xs in (
                (slice(y0, y1), slice(x0, x0 + line)),
                (slice(y0, y1), slice(x1 - line, x1)),
                (slice(y0, y0 + line), slice(x0, x1)),
                (slice(y1 - line, y1), slice(x0, x1)),
            ):
                view[ys, xs] = BOX_COLOR
        out.append(view)
    return np.stack(out)


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

    Where every receptive field spans the frame (`covers_frame`) the sheet shows the whole frames instead of the
    patches, and wide fields get the position boxed (`example_views`). With ``object_maps`` (the rollout
    ``Dataset``, or global frame index -> (64, 64) map) each patch also names the game object at its position
    (`jaxinterp.examples.object_response.objects_at`).
    """
    rf = result.receptive_field
    whole = covers_frame(rf)
    scale = max(1, math.ceil(MIN_PATCH_PIXELS / _view_size(result))) if scale is None else scale

    pos = result.positions
    title = f"{result.layer} #{int(result.ids[j])}: top {pos.values.shape[1]} of {result.num_frames} frames"
    if result.diversity:
        title += f" (diversity {result.diversity:g} on {result.diversity_on})"
    if whole:
        title += f"; fields span {rf.size} px: whole frames, the position boxed"
    elif boxes_position(rf):
        title += "; the position boxed"
    parts = [
        images.contact_sheet(
            example_views(result, pos, result.patches, j, scale),
            _labels(pos, j, show_frame, _objects(result, pos, j, object_maps)),
            columns=columns,
            title=title,
        )
    ]
    if bottom and result.bottom_patches.shape[1]:
        low = result.bottom
        parts.append(
            images.contact_sheet(
                example_views(result, low, result.bottom_patches, j, scale),
                _labels(low, j, show_frame, _objects(result, low, j, object_maps)),
                columns=columns,
                title=f"least activating (frame {result.frame_score}, {'boxed' if whole else 'patch'} at the minimum)",
            )
        )
    return images.stack(parts)


def overview_sheet(result: ExamplesResult, *, columns: int = DEFAULT_COLUMNS) -> np.ndarray:
    """Every feature of ``result`` at a glance: one row each of its top ``columns`` views (as `examples_sheet`
    shows them, smaller), captioned with its id and its best value; uint8."""
    n = min(columns, result.positions.values.shape[1])
    rows = [top_strip(result, j, n) for j in range(len(result.ids))]
    top = result.positions
    labels = [
        f"#{int(i)}: {v:.3g}" if f >= 0 else f"#{int(i)}: (none)"
        for i, v, f in zip(result.ids, top.values[:, 0], top.frames[:, 0], strict=True)
    ]
    title = f"{result.layer}: top {n} of {result.num_frames} frames per feature"
    return images.contact_sheet(np.stack(rows), labels, columns=1, title=title)


def top_strip(result: ExamplesResult, j: int, n: int = DEFAULT_COLUMNS) -> np.ndarray:
    """Feature ``j``'s first ``n`` chosen views side by side, each at least ``OVERVIEW_PIXELS`` wide; uint8."""
    scale = max(1, math.ceil(OVERVIEW_PIXELS / _view_size(result)))
    n = min(n, result.positions.values.shape[1])
    top = result.positions.head(n)
    return images.side_by_side(example_views(result, top, result.patches[:, :n], j, scale))


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
    """One PNG per feature (``<layer>_<id>.png``), the layer's `overview_sheet` (``<layer>_overview.png``) and,
    with ``npz``, ``<layer>_examples.npz`` of indices/values."""
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
    paths.append(images.save_png(out_dir / f"{stem}_overview.png", overview_sheet(result, columns=columns)))
    if npz:
        paths.append(save_npz(result, out_dir / f"{stem}_examples.npz"))
    return paths


CHECKER = (204, 255)
"""Grey and white of the checkerboard that shows through where a feature hardly responds: the usual sign of
transparency."""
CHECKER_SIZE = 4


def mosaic(result: SpatialExamples, j: int, reuse: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Feature ``j``'s picture (64, 64, 3) uint8 and the value shown at each position (H, W; NaN: no frame).

    Each cell shows its chosen frame's pixels over a grey-and-white checkerboard with opacity ``(value - lo) / (hi - lo)``,
    lo and hi the weakest and strongest value shown: the feature's best response at every place of the screen,
    in the game's own pixels. Relative, so signed features (a residual sum) read like relus; the values say how
    strong.
    """
    pick = choose(result, j, reuse)
    h, w = pick.shape
    filled = pick >= 0
    shown = np.where(filled, np.take_along_axis(result.values[j], pick.clip(0)[..., None], 2)[..., 0], np.nan)
    lo, hi = (shown[filled].min(), shown[filled].max()) if filled.any() else (0.0, 0.0)
    alpha = np.where(filled, (shown - lo) / (hi - lo), 0.0) if hi > lo else filled.astype(np.float64)
    yy, xx = np.mgrid[:FRAME_SIZE, :FRAME_SIZE]
    checker = np.where((yy // CHECKER_SIZE + xx // CHECKER_SIZE) % 2, *CHECKER).astype(np.float32)
    canvas = np.repeat(checker[..., None], 3, -1)
    rf = result.receptive_field
    rows, cols = cell_boxes(rf, h), cell_boxes(rf, w)
    for y in range(h):
        for x in range(w):
            if pick[y, x] < 0:
                continue
            cell = result.cells[j, y, x, pick[y, x]].astype(np.float32)
            y0, x0 = rows[y], cols[x]
            ys = slice(max(y0, 0), min(y0 + rf.jump, FRAME_SIZE))
            xs = slice(max(x0, 0), min(x0 + rf.jump, FRAME_SIZE))
            piece = cell[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
            canvas[ys, xs] = alpha[y, x] * piece + (1 - alpha[y, x]) * canvas[ys, xs]
    return np.round(canvas).astype(np.uint8), shown


def write_spatial(
    result: SpatialExamples, out_dir, *, reuse: int | None = None, columns: int = DEFAULT_COLUMNS
) -> list[Path]:
    """Every feature's `mosaic` (``<layer>_<id>_spatial.png``, upscaled ``SPATIAL_SCALE``x), all of them on one
    sheet (``<layer>_spatial.png``, captioned with the weakest..strongest value shown), and ``<layer>_spatial.npz`` (values,
    frame indices and episodes of every position's candidates)."""
    out_dir = Path(out_dir)
    stem = images.file_stem(result.layer)
    reuse = default_reuse(result) if reuse is None else reuse
    pictures, labels, paths = [], [], []
    for j, fid in enumerate(result.ids):
        picture, shown = mosaic(result, j, reuse)
        pictures.append(images.upscale(picture, SPATIAL_SCALE))
        labels.append(
            f"#{int(fid)}: {np.nanmin(shown):.3g}..{np.nanmax(shown):.3g}"
            if np.isfinite(shown).any()
            else f"#{int(fid)}: (none)"
        )
        paths.append(images.save_png(out_dir / f"{stem}_{int(fid):04d}_spatial.png", pictures[-1]))
    title = (
        f"{result.layer}: best frame at each position, {result.num_frames} frames "
        f"(opacity: weakest to strongest; at most {reuse} cells per episode)"
    )
    sheet = images.contact_sheet(np.stack(pictures), labels, columns=columns, title=title)
    paths.append(images.save_png(out_dir / f"{stem}_spatial.png", sheet))
    arrays = {
        "layer": np.asarray(result.layer),
        "ids": result.ids,
        "num_frames": np.asarray(result.num_frames),
    }
    arrays |= {"values": result.values, "frames": result.frames, "episodes": result.episodes}
    with atomic_path(out_dir / f"{stem}_spatial.npz") as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    paths.append(out_dir / f"{stem}_spatial.npz")
    return paths
