"""``report``: one HTML page of every channel's visualization, top examples and objects, for each stage's output."""

from __future__ import annotations

import argparse
from pathlib import Path

from jaxinterp.cli.common import add_checkpoint_arg, add_seed_arg, checkpoint, given, load

__all__ = ["FRAMES", "add_parsers", "cmd_report"]

FRAMES = 20000
"""Frames of the agent's own play recorded under OUT/data when no --dataset is given."""


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``report`` on the top-level subparsers."""
    rp = sub.add_parser(
        "report",
        help="one HTML page: every channel's visualization, top examples and objects, for each stage's output",
    )
    add_checkpoint_arg(rp)
    rp.add_argument("--dataset", help="a rollout dataset (default: record the agent's play under OUT/data)")
    rp.add_argument("--frames", type=int, default=FRAMES, help="frames to record when no --dataset is given")
    rp.add_argument("--layers", help="comma-separated layer names (default: each stage's output)")
    rp.add_argument("--k", type=int, help="examples per channel")
    rp.add_argument("--diversity", type=float, help="cosine-similarity penalty of the examples")
    rp.add_argument("--steps", type=int, help="feature-visualization steps")
    add_seed_arg(rp)
    rp.add_argument("--out", required=True, help="output directory: index.html and its images")
    rp.add_argument(
        "--sae", help="an SAE directory (jaxinterp sae train): adds a section with a row per latent"
    )
    rp.set_defaults(func=cmd_report)


def cmd_report(args) -> None:
    from jaxinterp.api import color_stats
    from jaxinterp.envs.dataset import Dataset
    from jaxinterp.envs.heist import HeistConfig
    from jaxinterp.envs.rollout import agent_policy, collect
    from jaxinterp.report.agent_report import REAL_FRAMES, write_agent_report

    weights = Path(checkpoint(args.checkpoint))
    agent = load(weights)
    out = Path(args.out)
    layers = agent.check_layers(x for x in (args.layers or "").split(",") if x) or None  # before any rollout
    if args.dataset:
        dataset = Dataset(args.dataset)
    else:  # the agent's own play on unbounded easy levels, recorded once under OUT (resumable)
        config = HeistConfig(seed=args.seed)
        dataset = collect(
            out / "data", frames=args.frames, policy=agent_policy(agent), env_config=config, seed=args.seed
        )
    stats = color_stats(agent, weights, frames=dataset.evenly_spaced(REAL_FRAMES)["frames"])
    page = write_agent_report(
        agent,
        dataset,
        out,
        layers=layers,
        color_matrix=stats.matrix,
        seed=args.seed,
        source=str(weights),
        sae=args.sae,
        **given(k=args.k, diversity=args.diversity, steps=args.steps),
    )
    print(f"wrote {page}")
