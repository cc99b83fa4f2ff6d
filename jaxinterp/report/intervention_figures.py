"""Pictures and tables of an intervention sweep: each edit's paths drawn over the levels' first frames beside the
clean agent's, a GIF of an edited episode next to the clean one, and a bar chart and table of what every edit
changed (success, what the agent reached first, the policy's KL) with 95% intervals."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from jaxinterp import atomic, render
from jaxinterp.interventions.play import EVENTS
from jaxinterp.interventions.sweep import Sweep

__all__ = [
    "CLEAN_COLOUR",
    "EDIT_COLOUR",
    "bar_chart",
    "episode_gif",
    "table_markdown",
    "trajectories",
    "write_sweep",
]

CLEAN_COLOUR = (0, 230, 255)
"""The clean agent's path: cyan, which no Heist object is."""
EDIT_COLOUR = (255, 40, 200)
"""The edited agent's path: magenta."""
SCALE = 4
"""Frames are drawn 4x (256 px), so that paths one pixel apart stay apart."""
PICTURED_LEVELS = 8


def _env(sweep: Sweep, edit: int, level: int) -> int:
    return int(np.flatnonzero((sweep.which == edit) & (sweep.level_of == level))[0])


def _draw_path(draw: ImageDraw.ImageDraw, path: np.ndarray, colour, scale: int) -> None:
    points = [tuple(p * scale) for p in path[np.isfinite(path).all(1)]]
    if len(points) > 1:
        draw.line(points, fill=colour, width=2)
    if points:
        x, y = points[0]
        draw.ellipse((x - 4, y - 4, x + 4, y + 4), outline=colour, width=2)
        x, y = points[-1]
        draw.rectangle((x - 3, y - 3, x + 3, y + 3), fill=colour)


def _outcome(sweep: Sweep, env: int) -> str:
    play = sweep.play
    first = play.first_reached()[env]
    what = EVENTS[first] if first >= 0 else "nothing"
    return f"{'gem' if play.success[env] else 'fail'} {play.length[env]} ({what} 1st)"


def trajectories(
    sweep: Sweep, edit: int, levels: Sequence[int] | None = None, *, scale: int = SCALE
) -> np.ndarray:
    """A sheet of levels: on each first frame the clean path (cyan) and the path under ``edit`` (magenta), from a
    circle to a square; labels give the outcomes."""
    levels = range(min(PICTURED_LEVELS, len(sweep.levels.seeds))) if levels is None else levels
    images, labels = [], []
    for level in levels:
        clean, edited = _env(sweep, 0, level), _env(sweep, edit, level)
        image = Image.fromarray(render.upscale(sweep.play.first_frames[clean], scale))
        draw = ImageDraw.Draw(image)
        _draw_path(draw, sweep.play.path[clean], CLEAN_COLOUR, scale)
        _draw_path(draw, sweep.play.path[edited], EDIT_COLOUR, scale)
        images.append(np.asarray(image))
        labels.append(
            f"level {sweep.levels.seeds[level]}\nclean: {_outcome(sweep, clean)}\nedit: {_outcome(sweep, edited)}"
        )
    return render.contact_sheet(
        np.stack(images), labels, columns=4, title=f"{sweep.names[edit]} (magenta) vs clean"
    )


def episode_gif(path: str | Path, sweep: Sweep, edit: int, level: int) -> Path:
    """The clean and the edited episode of ``level`` side by side as a GIF (the sweep must have kept their frames)."""
    kept = sweep.kept.tolist()
    clean, edited = kept.index(_env(sweep, 0, level)), kept.index(_env(sweep, edit, level))
    frames = sweep.play.frames
    gap = np.full((frames.shape[1], 64, 2, 3), 255, np.uint8)
    both = np.concatenate([frames[clean], gap, frames[edited]], axis=2)
    return render.save_gif(path, both.repeat(3, 1).repeat(3, 2))


def bar_chart(path: str | Path, rows: list[dict], *, top: int = 40) -> Path:
    """Horizontal bars of each edit's change in success (with its 95% interval) and the share of levels whose first
    reached object changed, edits sorted by their effect on success; at most ``top`` edits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edits = sorted(rows[1:], key=lambda r: r["success_change"])[:top]
    names = [r["edit"] for r in edits]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.28 * len(edits) + 1.5), sharey=True)
    change = np.array([r["success_change"] for r in edits])
    ci = np.array([r["success_ci"] for r in edits]).T
    axes[0].barh(names, change, xerr=np.abs(ci - change), color="#c0392b", ecolor="#555")
    axes[0].axvline(0, color="k", lw=0.8)
    axes[0].set_xlabel(f"success change vs clean ({rows[0]['success']:.0%}), 95% CI")
    axes[1].barh(names, [r["first_changed"] for r in edits], color="#2c7fb8")
    axes[1].set_xlabel("levels where the first object reached changed")
    axes[0].invert_yaxis()
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(path)


def table_markdown(rows: list[dict]) -> str:
    """The sweep's comparison as a markdown table, one line per edit."""
    head = "| edit | success | change [95% CI] | p | mean length change | first object changed | KL |\n"
    lines = [head + "|---|---|---|---|---|---|---|"]
    for r in rows:
        lo, hi = r["success_ci"]
        lines.append(
            f"| `{r['edit']}` | {r['success']:.1%} | {r['success_change']:+.1%} [{lo:+.1%}, {hi:+.1%}] | "
            f"{r['success_p']:.3g} | {r['length_change']:+.0f} | {r['first_changed']:.0%} | {r['kl']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def write_sweep(out: str | Path, sweep: Sweep, *, extra: dict | None = None) -> Path:
    """``out/``: ``results.json`` (every row, the levels, the edits), ``table.md``, ``effects.png``, per edit
    ``trajectories_<e>.png`` and, where the sweep kept frames, ``episode_<e>.gif`` beside the clean one."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"edits": sweep.names, "level_seeds": sweep.levels.seeds.tolist(), "rows": sweep.rows} | (
        extra or {}
    )
    atomic.write_json(out / "results.json", payload)
    atomic.write_text(out / "table.md", table_markdown(sweep.rows))
    if len(sweep.rows) > 1:
        bar_chart(out / "effects.png", sweep.rows)
    for e in range(1, len(sweep.names)):
        render.save_png(out / f"trajectories_{e}.png", trajectories(sweep, e))
        if len(sweep.kept):
            episode_gif(out / f"episode_{e}.gif", sweep, e, 0)
    return out
