"""``jaxinterp intervene``: play the agent under edits of its activations, many at once on the same levels."""

from __future__ import annotations

import argparse
import re

from jaxinterp.cli.common import add_checkpoint_arg, add_seed_arg, load
from jaxinterp.errors import JaxinterpError

__all__ = ["add_parsers", "cmd_intervene"]

FRAMES = 2048
"""Frames of the agent's own play for mean and resample ablations and typical peaks when no --dataset is given."""


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "intervene",
        help="ablate, patch or steer channels / SAE latents while the agent plays; compare with clean",
        description=(
            "Play the clean agent and every edit on the same unseen levels, in one batch, and compare: success, "
            "length, what the agent reaches first, its path, the policy's KL to clean. Edits: LAYER:CH=0, "
            "=mean, =resample, =V[@X,Y], +=V[@X,Y], *=S, =frame:N; sae:LATENT... with --sae; ';' joins edits."
        ),
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--edit", action="append", help="an edit (repeat for a sweep of several)")
    what.add_argument("--ablate-each", metavar="LAYER", help="one ablation per channel of LAYER (--channels)")
    what.add_argument(
        "--steer",
        metavar="LAYER@X,Y",
        help="one edit per channel (--channels): add its typical peak (or --value) at layer position X,Y",
    )
    p.add_argument("--channels", default="all", help="channels for --ablate-each / --steer (default all)")
    p.add_argument("--how", default="0", choices=("0", "mean", "resample"), help="--ablate-each's ablation")
    p.add_argument("--value", type=float, help="--steer's added value (default: each channel's typical peak)")
    p.add_argument("--levels", type=int, default=64, help="unseen levels every edit plays (default 64)")
    add_seed_arg(p, help="draws the levels and the sampled actions")
    add_checkpoint_arg(p)
    p.add_argument(
        "--dataset", help="rollout dataset for mean/resample/patch edits (default: the agent's play)"
    )
    p.add_argument("--sae", help="an SAE directory (SAELens layout) for sae: edits")
    p.add_argument("--greedy", action="store_true", help="argmax actions instead of sampled ones")
    p.add_argument("--max-steps", type=int, help="cut episodes short (default: Heist's 1000-step timeout)")
    p.add_argument("--gifs", type=int, default=1, help="levels whose episodes are kept for GIFs (12 MB each)")
    p.add_argument("--out", required=True, help="directory for results.json, table.md, effects.png, pictures")
    p.set_defaults(func=cmd_intervene)


def _steer_target(text: str) -> tuple[str, tuple[int, int]]:
    m = re.fullmatch(r"\s*([\w.]+)\s*@\s*(\d+)\s*,\s*(\d+)\s*", text)
    if m is None:
        raise JaxinterpError(f"--steer {text!r}: give LAYER@X,Y, e.g. conv_seqs.2.res_block1@1,1")
    return m[1], (int(m[2]), int(m[3]))


def _frames(args, agent):
    """Dataset frames for the edits that need them: --dataset's, else the agent's own play."""
    import numpy as np

    if args.dataset:
        from jaxinterp.envs.dataset import Dataset

        return np.asarray(Dataset(args.dataset).evenly_spaced(FRAMES)["frames"])
    from jaxinterp.rl.export import agent_frames

    return agent_frames(agent, FRAMES, seed=args.seed)


def _needs_frames(edits: list[str]) -> bool:
    return any(re.search(r"=\s*(mean|resample|frame:)", e) for e in edits)


def cmd_intervene(args) -> None:
    from jaxinterp.interventions import ablate_each, reach_rate, run_sweep, steer_edits
    from jaxinterp.report.intervention_figures import table_markdown, write_sweep

    agent = load(args.checkpoint)
    sae = None
    if args.sae:
        from jaxinterp.sae.files import load_sae

        sae = load_sae(args.sae)
    target = None
    if args.steer:
        layer, target = _steer_target(args.steer)
        frames = _frames(args, agent) if args.value is None else None
        edits = steer_edits(agent, layer, args.channels, target, frames, args.value)
    elif args.ablate_each:
        edits = ablate_each(agent, args.ablate_each, args.channels, args.how)
    else:
        edits = args.edit
    frames = _frames(args, agent) if _needs_frames(edits) else None
    sweep = run_sweep(
        agent,
        edits,
        num_levels=args.levels,
        seed=args.seed,
        frames=frames,
        sae=sae,
        greedy=args.greedy,
        max_steps=args.max_steps,
        keep_frames=args.gifs if len(edits) <= 8 else 0,
    )
    extra = {"steer": reach_rate(sweep, agent, layer, target)} if target else {}
    out = write_sweep(args.out, sweep, extra=extra)
    print(table_markdown(sweep.rows))
    for row in extra.get("steer", []):
        print(
            f"{row['edit']}: within a cell of {tuple(row['target'])} in {row['reached_edited']:.0%} of levels "
            f"(clean {row['reached_clean']:.0%}, p {row['p']:.3g}); closest {row['closest_edited']:.1f} px "
            f"(clean {row['closest_clean']:.1f}, p {row['closest_p']:.3g})"
        )
    print(f"wrote {out}")
