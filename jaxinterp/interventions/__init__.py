"""Interventions: ablate, patch, set or add to channels or SAE latents inside the jitted forward while the agent
plays, many edits at once on the same levels, and measure what changed against the clean agent."""

from jaxinterp.interventions.compare import compare, mcnemar_p
from jaxinterp.interventions.edits import (
    Edit,
    EditArrays,
    Slot,
    apply_slot,
    compile_edits,
    describe,
    parse_edits,
)
from jaxinterp.interventions.play import EVENTS, Levels, Play, make_levels, play
from jaxinterp.interventions.sweep import (
    Sweep,
    ablate_each,
    reach_rate,
    run_sweep,
    steer_edits,
    typical_peaks,
)

__all__ = [
    "EVENTS",
    "Edit",
    "EditArrays",
    "Levels",
    "Play",
    "Slot",
    "Sweep",
    "ablate_each",
    "apply_slot",
    "compare",
    "compile_edits",
    "describe",
    "make_levels",
    "mcnemar_p",
    "parse_edits",
    "play",
    "reach_rate",
    "run_sweep",
    "steer_edits",
    "typical_peaks",
]
