"""A sweep: many edits (the clean policy first), every one played on the same levels in one batch, compared.

Recipes on top: ``ablate_each`` (every channel of a layer, one at a time) and ``steer`` (add a channel's typical
activation at a chosen position, and measure how often the agent then goes there).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxinterp.errors import JaxinterpError
from jaxinterp.interventions.compare import compare, mcnemar_p
from jaxinterp.interventions.edits import Edit, compile_edits, describe, parse_edits
from jaxinterp.interventions.play import Levels, Play, make_levels, play
from jaxinterp.models.agent import Agent, parse_channels
from jaxinterp.models.receptive import receptive_field

__all__ = ["Sweep", "ablate_each", "reach_rate", "run_sweep", "steer_edits", "typical_peak"]


class Sweep(NamedTuple):
    """Edits ``names[e]`` played on every level of ``levels``: env i under edit ``which[i]`` on ``level_of[i]``."""

    names: list[str]
    which: np.ndarray
    level_of: np.ndarray
    levels: Levels
    play: Play
    rows: list[dict]
    kept: np.ndarray  # the environments whose frames `play` kept


def run_sweep(
    agent: Agent,
    edits: list[str | tuple[Edit, ...]],
    levels: Levels | None = None,
    *,
    num_levels: int = 64,
    seed: int = 0,
    frames: np.ndarray | None = None,
    sae=None,
    greedy: bool = False,
    max_steps: int | None = None,
    keep_frames: int = 0,
    progress: bool = True,
) -> Sweep:
    """Play the clean agent and each of ``edits`` (strings as `parse_edits` reads them, or tuples of `Edit`) on
    the same ``num_levels`` unseen levels (drawn from ``seed``), all at once; compare each with the clean one.
    Every edit's frames on the first ``keep_frames`` levels are kept (`Sweep.kept`; 12 MB per episode)."""
    from jaxinterp.rl.evaluate import level_config

    parsed = [
        parse_edits(e, sae_layer=sae.layer if sae else None) if isinstance(e, str) else tuple(e)
        for e in edits
    ]
    edit_lists = [(), *[p for p in parsed if p]]
    if levels is None:
        levels = make_levels(level_config("unseen", num_envs=num_levels, seed=seed))
    arrays = compile_edits(agent, edit_lists, frames=frames, sae=sae, seed=seed)
    n_levels = len(levels.seeds)
    which = np.repeat(np.arange(len(edit_lists)), n_levels).astype(np.int32)
    level_of = np.tile(np.arange(n_levels), len(edit_lists)).astype(np.int32)
    options = {"max_steps": max_steps} if max_steps else {}
    kept = np.flatnonzero(level_of < keep_frames)
    result = play(
        agent,
        levels,
        arrays,
        which,
        level_of,
        seed=seed,
        greedy=greedy,
        keep_frames=kept,
        progress_bar=progress,
        **options,
    )
    names = [describe(e) for e in edit_lists]
    rows = compare(result, which, level_of, names, seed=seed)
    return Sweep(names, which, level_of, levels, result, rows, kept)


def ablate_each(agent: Agent, layer: str, channels="all", how: str = "0") -> list[str]:
    """Edits zeroing (``how="0"``), mean- or resample-ablating each channel of ``layer`` alone."""
    n = agent.layer_shapes[agent.check_layers([layer])[0]][-1]
    if how not in ("0", "mean", "resample"):
        raise JaxinterpError(f"ablation {how!r} is not one of 0, mean, resample")
    return [f"{layer}:{c}={how}" for c in parse_channels(channels, n, f"layer {layer!r}")]


def typical_peak(agent: Agent, layer: str, channel: int, frames: np.ndarray) -> float:
    """A channel's typical peak: its largest value over positions, averaged over ``frames`` (the agent's play)."""
    acts = np.asarray(agent.activations(frames, [layer])[layer])[..., channel]
    return float(acts.reshape(len(acts), -1).max(1).mean())


def steer_edits(layer: str, channel: int, targets: list[tuple[int, int]], value: float) -> list[str]:
    """One edit per target position (x, y): add ``value`` to ``channel`` there."""
    return [f"{layer}:{channel}+={value:g}@{x},{y}" for x, y in targets]


def reach_rate(sweep: Sweep, agent: Agent, layer: str, targets: list[tuple[int, int]]) -> list[dict]:
    """For the steering edits (rows 1..), how often the agent's path passes over the target position's receptive
    field centre (within one layer cell), against the clean agent on the same levels."""
    rf = receptive_field(agent, layer)
    radius = rf.jump / 2
    path = sweep.play.path
    out = []
    for e, (x, y) in enumerate(targets, start=1):
        centre = np.array([rf.center(x), rf.center(y)])
        near = np.nanmin(np.linalg.norm(path - centre, axis=-1), axis=1) <= radius
        clean = near[(sweep.which == 0)][np.argsort(sweep.level_of[sweep.which == 0])]
        edited = near[(sweep.which == e)][np.argsort(sweep.level_of[sweep.which == e])]
        out.append(
            {
                "edit": sweep.names[e],
                "target": [x, y],
                "target_pixel": centre.tolist(),
                "reached_clean": float(clean.mean()),
                "reached_edited": float(edited.mean()),
                "p": mcnemar_p(clean, edited),
            }
        )
    return out
