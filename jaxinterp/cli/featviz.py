"""``visualize``: feature visualization of every channel of some layers, whole images or patches in context."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from jaxinterp.cli.common import (
    add_checkpoint_arg,
    add_seed_arg,
    checkpoint,
    given,
    load,
    parse_ints,
)
from jaxinterp.errors import JaxinterpError

if TYPE_CHECKING:
    from jaxinterp.featviz.context import ContextSpec
    from jaxinterp.featviz.transforms import Transform
    from jaxinterp.models.agent import Agent
    from jaxinterp.report.visualizations import FeatvizSettings

__all__ = ["add_parsers", "cmd_visualize"]


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``visualize`` on the top-level subparsers."""
    v = sub.add_parser(
        "visualize", help="feature visualization of every channel of a layer, in one jitted call"
    )
    add_checkpoint_arg(v)
    v.add_argument("--layer", help="layer name(s), comma-separated")
    v.add_argument("--all-layers", action="store_true", help="every spatial layer (pre-relu names)")
    v.add_argument("--channels", default="all", help="all | 3 | 0-15 | 1,4,9")
    v.add_argument(
        "--objective",
        help="channel (the default) | neuron | 'L:7 - 0.5*L:3' | action:2 | value | deepdream:L ... (see README)",
    )
    v.add_argument("--facets", type=int, help="images per channel, pushed apart by --diversity (default 1)")
    v.add_argument("--steps", type=int, help="optimization steps (default 512)")
    v.add_argument("--thresholds", help="steps at which to keep images too, e.g. 64,256")
    v.add_argument("--lr", type=float, help="Adam learning rate (default 0.05)")
    v.add_argument("--basis", choices=["fft", "pixel"], help="image parameterization (default fft)")
    v.add_argument(
        "--no-decorrelate",
        action="store_true",
        help="optimize plain RGB, not the agent's decorrelated colours",
    )
    v.add_argument(
        "--no-transforms", action="store_true", help="no pad, jitter, scale or rotation between steps"
    )
    v.add_argument(
        "--jitter",
        help="jitter crop sizes in px, before and after scale/rotation (default: transforms.DEFAULT_JITTERS; "
        "transforms.NEURON_JITTERS suits --objective neuron)",
    )
    _add_context_args(v)
    v.add_argument("--tv", type=float, help="total-variation penalty weight (default 0.0)")
    v.add_argument("--l2", type=float, help="L2 penalty weight on the image (default 0.0)")
    v.add_argument("--diversity", type=float, help="facet diversity weight (needs --facets > 1)")
    v.add_argument(
        "--real-frames", type=int, help="frames of the agent's play for percentiles and colour statistics"
    )
    add_seed_arg(v)
    v.add_argument("--out", required=True, help="output directory: a folder per layer")
    v.set_defaults(func=cmd_visualize)


def _add_context_args(v: argparse.ArgumentParser) -> None:
    v.add_argument(
        "--context",
        action="store_true",
        help="optimize a patch pasted into the agent's frames over one position (objective: its neuron)",
    )
    v.add_argument("--context-size", type=int, help="patch side in px (default two maze tiles)")
    v.add_argument(
        "--context-jitter", type=int, help="largest patch shift per step in px (default half a cell)"
    )
    v.add_argument("--context-batch", type=int, help="frames each patch is pasted into per step")
    v.add_argument("--context-at", help="layer position X,Y under the patch (default the centre)")


def cmd_visualize(args) -> None:
    from jaxinterp.api import color_stats
    from jaxinterp.report.agent_report import REAL_FRAMES
    from jaxinterp.report.visualizations import visualize_layers
    from jaxinterp.rl.export import agent_frames

    settings = _settings(args)  # before the slow part, so bad flags fail at once
    weights = Path(checkpoint(args.checkpoint))
    agent = load(weights)
    layers = _layers(args, agent)
    for layer in layers if settings.context is not None else ():
        settings.context.position(agent, layer)  # a bad --context-at fails before the agent plays
    real_frames = REAL_FRAMES if args.real_frames is None else args.real_frames
    frames = agent_frames(agent, real_frames, seed=args.seed)
    stats = color_stats(agent, weights, frames=frames)
    settings = dataclasses.replace(settings, color_matrix=stats.matrix)
    summary = visualize_layers(agent, layers, args.channels, settings, out_dir=args.out, real_frames=frames)
    print(f"wrote {summary['out_dir']}")


def _settings(args) -> FeatvizSettings:
    """The `FeatvizSettings` of the flags (checked when built); the flags left out keep the library's defaults."""
    from jaxinterp.report.visualizations import FeatvizSettings

    transforms = _transforms(args)
    context, objective = _context(args)
    thresholds = parse_ints(args.thresholds, "--thresholds", "step counts, e.g. 64,256")
    return FeatvizSettings(
        objective=objective,
        decorrelate=not args.no_decorrelate,
        transforms=transforms,
        context=context,
        seed=args.seed,
        **given(
            thresholds=thresholds,
            facets=args.facets,
            steps=args.steps,
            lr=args.lr,
            basis=args.basis,
            tv=args.tv,
            l2=args.l2,
            diversity=args.diversity,
        ),
    )


def _layers(args, agent: Agent) -> list[str]:
    """``--all-layers`` (every spatial layer, pre-relu names) or ``--layer``'s names, checked."""
    if args.all_layers:
        return [n for n in agent.conv_layer_names if not n.endswith(".relu")]
    if args.layer:
        return list(agent.check_layers([x for x in args.layer.split(",") if x]))
    raise JaxinterpError("give --layer NAME[,NAME...] or --all-layers")


def _transforms(args) -> Transform | None:
    """The transforms of the flags: the standard chain, its jitter replaced by ``--jitter``, or none."""
    from jaxinterp.featviz import transforms as tf

    if args.jitter is None:
        return None if args.no_transforms else tf.standard_transforms()
    if args.no_transforms:
        raise JaxinterpError("--jitter has no effect with --no-transforms; drop one of them")
    return tf.Transform(jitters=parse_ints(args.jitter, "--jitter", "crop sizes in px, e.g. 16,8 or 8,4"))


def _context(args) -> tuple[ContextSpec | None, str]:
    """The `ContextSpec` of the flags, or None without ``--context``; and the objective to use."""
    from jaxinterp.featviz.context import ContextSpec

    if not args.context:
        return None, args.objective or "channel"
    if args.jitter is not None or args.no_transforms:
        raise JaxinterpError(
            "--context shifts its patch by --context-jitter: drop --jitter / --no-transforms"
        )
    at = None
    if args.context_at:
        x, y = _position(args.context_at)
        at = (y, x)  # ContextSpec, like the layer's arrays, takes the row first
    spec = ContextSpec(
        **given(size=args.context_size, jitter=args.context_jitter, batch=args.context_batch), at=at
    )
    # By default the objective is the neuron under the patch.
    return spec, args.objective or ("neuron" if at is None else f"neuron@{at[1]},{at[0]}")


def _position(text: str) -> tuple[int, int]:
    """``--context-at X,Y``: column first, as in ``neuron@x,y``."""
    expected = "the layer position as X,Y, e.g. 4,4"
    position = parse_ints(text, "--context-at", expected)
    if len(position) != 2:
        raise JaxinterpError(f"--context-at {text!r}: give {expected}")
    return position
