"""Object-response reports: a features x object-classes heatmap of position-matched z-scores, a table, and the
object maps themselves drawn beside their frames, so a reader can check what each class covers."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from jaxinterp import render as images
from jaxinterp.atomic import write_text
from jaxinterp.envs.ground_truth import OBJECT_CLASSES
from jaxinterp.examples.object_response import ObjectResponse, save_npz

__all__ = ["OBJECT_COLOURS", "colorize_objects", "object_maps_sheet", "object_table", "write_object_response"]

OBJECT_COLOURS = np.array(
    [
        (40, 40, 40),  # floor: dark, so that the objects stand out
        (200, 200, 200),  # wall
        (255, 0, 255),  # agent
        (255, 215, 0),  # gem
        (40, 90, 255),  # key_blue
        (30, 170, 30),  # key_green
        (220, 30, 30),  # key_red
        (140, 170, 255),  # lock_blue
        (140, 230, 140),  # lock_green
        (255, 150, 150),  # lock_red
        (0, 230, 230),  # held keys: cyan, whatever their colour
        (0, 230, 230),
        (0, 230, 230),
    ],
    np.uint8,
)
"""One RGB colour per `OBJECT_CLASSES` entry for drawn object maps: keys saturated, their locks pale."""

STRONG = 1.0
"""z-score from which the table calls a response strong (one standard deviation above the feature's usual value
at that position)."""


def objects_html(ranked) -> str:
    """A table cell's list of (object, z) pairs, the strong ones (z >= `STRONG`) in bold; "-" for none."""
    cells = [
        f"<span class='strong'>{html.escape(o)} {z:.2f}</span>"
        if z >= STRONG
        else f"{html.escape(o)} {z:.2f}"
        for o, z in ranked
    ]
    return ", ".join(cells) or "-"


def object_table(result: ObjectResponse, top: int = 3) -> str:
    """A markdown table: per feature, its ``top`` object classes (floor and wall left out) with their z-scores."""
    lines = [
        f"{result.description}: position-matched z-scores over {result.num_frames:,} frames",
        "",
        "| feature | responds to (z) | floor | wall |",
        "|---|---|---|---|",
    ]
    floor, wall = result.classes.index("floor"), result.classes.index("wall")
    for f, (fid, ranked) in enumerate(zip(result.ids, result.ranked(top), strict=True)):
        best = ", ".join(
            f"{'**' if z >= STRONG else ''}{c} {z:.2f}{'**' if z >= STRONG else ''}" for c, z in ranked
        )
        lines.append(f"| {fid} | {best} | {result.z[f, floor]:.2f} | {result.z[f, wall]:.2f} |")
    return "\n".join(lines) + "\n"


def colorize_objects(maps) -> np.ndarray:
    """uint8 RGB (..., 64, 64, 3) pictures of object maps in `OBJECT_COLOURS`."""
    return OBJECT_COLOURS[np.asarray(maps)]


def object_maps_sheet(frames, maps, *, scale: int = 3) -> np.ndarray:
    """Each frame beside its object map (up to 8 pairs in a row), with a colour key of the classes underneath."""
    frames, maps = np.asarray(frames), np.asarray(maps)
    pairs = [images.side_by_side([f, colorize_objects(m)]) for f, m in zip(frames, maps, strict=True)]
    sheet = images.contact_sheet(
        np.stack(pairs), columns=4, scale=scale, title="frames and their object maps"
    )
    swatches = np.repeat(np.repeat(OBJECT_COLOURS[:, None, None, :], 8, 1), 24, 2)  # wide enough for names
    names = [*OBJECT_CLASSES[:10], "held key"]  # the three held keys share one colour
    key = images.contact_sheet(swatches[: len(names)], names, columns=len(names), scale=scale)
    return images.stack([sheet, key])


def write_object_response(result: ObjectResponse, out_dir: str | Path) -> list[Path]:
    """Write ``objects.npz`` (all numbers), ``objects.md`` (the table) and ``objects.png`` (the heatmap)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "objects.npz", out / "objects.md", out / "objects.png"]
    save_npz(result, paths[0])
    write_text(paths[1], object_table(result))
    f, k = result.z.shape
    fig, ax = plt.subplots(figsize=(1.2 + 0.55 * k, 1.4 + 0.28 * f))
    limit = max(float(np.nanmax(np.abs(result.z))) if np.isfinite(result.z).any() else 1.0, 1.0)
    im = ax.imshow(result.z, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(
        range(k),
        [f"{c}\n{p:,} px" for c, p in zip(result.classes, result.pixels)],
        rotation=60,
        ha="right",
        fontsize=7,
    )
    ax.set_yticks(range(f), [str(i) for i in result.ids], fontsize=7)
    ax.set_ylabel("feature")
    for (y, x), v in np.ndenumerate(result.z):
        if np.isfinite(v) and abs(v) >= STRONG:
            ax.text(x, y, f"{v:.1f}", ha="center", va="center", fontsize=6)
    ax.set_title(
        f"{result.description}\nz vs the feature's usual value at the same position ({result.num_frames:,} frames)",
        fontsize=8,
    )
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(paths[2], dpi=100)
    plt.close(fig)
    return paths
