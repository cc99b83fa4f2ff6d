"""A sweep: many edits (the clean policy first), every one played on the same levels in one batch, compared.

Recipes on top: ``ablate_each`` (every channel of a layer, one at a time) and ``steer`` (add a channel's typical
activation at a chosen position, and measure how often the agent then goes there).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxinterp.errors import JaxinterpError
from jaxinterp.interventions.compare import compare, mcnemar_p, permutation_p
from jaxinterp.interventions.edits import Edit, compile_edits, describe, parse_edits
from jaxinterp.interventions.play import Levels, Play, make_levels, play
from jaxinterp.models.agent import Agent, parse_channels
from jaxinterp.models.receptive import receptive_field

__all__ = ["Sweep", "ablate_each", "reach_rate", "run_sweep", "steer_edits", "typical_peaks"]


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


def typical_peaks(agent: Agent, layer: str, frames: np.ndarray) -> np.ndarray:
    """How far each channel's strongest position stands above its median position, averaged over ``frames`` (the
    agent's play): what "this channel fires here" looks like, also for layers before a relu, whose values are often
    negative everywhere."""
    acts = np.asarray(agent.activations(frames, [layer])[layer])
    acts = acts.reshape(len(acts), -1, acts.shape[-1])
    return (acts.max(1) - np.median(acts, 1)).mean(0)


def steer_edits(
    agent: Agent, layer: str, channels, at: tuple[int, int], frames: np.ndarray, value: float | None = None
) -> list[str]:
    """One edit per channel: add ``value`` (default: the channel's `typical_peaks` on ``frames``) to it at layer
    position ``at`` = (x, y)."""
    n = agent.layer_shapes[agent.check_layers([layer])[0]][-1]
    chosen = parse_channels(channels, n, f"layer {layer!r}")
    values = typical_peaks(agent, layer, frames) if value is None else np.full(n, value)
    return [f"{layer}:{c}+={values[c]:.4g}@{at[0]},{at[1]}" for c in chosen]


def reach_rate(sweep: Sweep, agent: Agent, layer: str, at: tuple[int, int], *, seed: int = 0) -> list[dict]:
    """For every edit against the clean agent on the same levels: how often the agent's path passes within one
    layer cell of layer position ``at``'s receptive-field centre (McNemar), and how close it comes on average
    (pixels; sign-flip permutation test)."""
    rf = receptive_field(agent, layer)
    centre = np.array([rf.center(at[0]), rf.center(at[1])])
    closest = np.nanmin(np.linalg.norm(sweep.play.path - centre, axis=-1), axis=1)

    def per_level(values, e):
        return values[sweep.which == e][np.argsort(sweep.level_of[sweep.which == e])]

    rng = np.random.default_rng(seed)
    base = per_level(closest, 0)
    out = []
    for e in range(1, len(sweep.names)):
        edited = per_level(closest, e)
        out.append(
            {
                "edit": sweep.names[e],
                "target": list(at),
                "target_pixel": centre.tolist(),
                "reached_clean": float((base <= rf.jump).mean()),
                "reached_edited": float((edited <= rf.jump).mean()),
                "p": mcnemar_p(base <= rf.jump, edited <= rf.jump),
                "closest_clean": float(base.mean()),
                "closest_edited": float(edited.mean()),
                "closest_p": permutation_p(edited - base, rng),
            }
        )
    return out
