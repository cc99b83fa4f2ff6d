"""The agent's commands: ``train-agent``, ``info``, ``convert``, ``rollout``, ``evaluate``, ``export-agent``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from jaxinterp.cli.common import (
    add_checkpoint_arg,
    add_seed_arg,
    checkpoint,
    given,
    load,
    parse_config,
)
from jaxinterp.errors import JaxinterpError

__all__ = [
    "add_parsers",
    "cmd_convert",
    "cmd_evaluate",
    "cmd_export_agent",
    "cmd_info",
    "cmd_rollout",
    "cmd_train_agent",
]


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register this group's commands on the top-level subparsers, in the order ``--help`` lists them."""
    for add in (_add_train_agent, _add_info, _add_convert, _add_rollout, _add_evaluate, _add_export_agent):
        add(sub)


def _add_train_agent(sub) -> None:
    t = sub.add_parser("train-agent", help="train a Heist agent with PPO (resumable: rerun to continue)")
    t.add_argument("--frames", type=int, required=True, help="total environment frames to train to")
    t.add_argument(
        "--out", required=True, help="run directory (checkpoints, metrics.jsonl, learning_curve.png)"
    )
    t.add_argument("--arch", help="impala (default), impala-procgen-tools or interpretable-cnn")
    t.add_argument(
        "--config", help="JSON file or key=value,... overriding PPO defaults (e.g. update_epochs=1)"
    )
    add_seed_arg(t)
    t.add_argument("--checkpoint-every", type=float, help="seconds between checkpoints")
    t.add_argument(
        "--init-from",
        help="start a new --out run from this run's latest checkpoint (to go on with another --config)",
    )
    t.set_defaults(func=cmd_train_agent)


def cmd_train_agent(args) -> None:
    from jaxinterp.rl.ppo import PPOConfig
    from jaxinterp.rl.train import train

    fields = parse_config(args.config) | ({"arch": args.arch} if args.arch else {})
    state = train(
        PPOConfig.from_dict(fields),
        args.out,
        frames=args.frames,
        seed=args.seed,
        init_from=args.init_from,
        **given(checkpoint_every_s=args.checkpoint_every),
    )
    print(f"{int(state.frames):,} frames trained; checkpoints in {Path(args.out) / 'checkpoints'}")


def _add_info(sub) -> None:
    i = sub.add_parser(
        "info", help="architecture, actions, parameters and every layer's shape of a checkpoint"
    )
    i.add_argument("file", nargs="?", help="checkpoint (default: the shipped agent)")
    i.set_defaults(func=cmd_info)


def cmd_info(args) -> None:
    path = checkpoint(args.file)
    agent = load(path)
    print(f"{path}\narchitecture: {agent.arch.name} ({agent.arch.description})")
    print(
        f"actions: {agent.num_actions}\nparameters: {agent.num_params:,}\nlayers ({len(agent.layer_shapes)}):"
    )
    width = max(map(len, agent.layer_shapes))
    for name, shape in agent.layer_shapes.items():
        print(f"  {name:<{width}}  {' x '.join(map(str, shape))}")


def _add_convert(sub) -> None:
    c = sub.add_parser(
        "convert",
        help="convert weights: the format follows OUT's suffix (.pt, .safetensors) or a directory for orbax",
    )
    c.add_argument(
        "input", help="weights file, orbax directory or train-agent run directory (its latest policy)"
    )
    c.add_argument("output", help="OUT.pt (pfrl torch layout), OUT.safetensors, or a directory (orbax)")
    c.set_defaults(func=cmd_convert)


def cmd_convert(args) -> None:
    from jaxinterp.weights.store import save_agent

    agent = load(args.input)
    out = save_agent(agent, args.output)
    print(f"wrote {out} ({agent.arch.name}, {agent.num_params:,} parameters)")


def _add_rollout(sub) -> None:
    r = sub.add_parser(
        "rollout", help="record Heist play (frames, actions, rewards, activations) to a dataset"
    )
    add_checkpoint_arg(r)
    r.add_argument("--random", action="store_true", help="random actions instead of an agent")
    r.add_argument("--greedy", action="store_true", help="argmax actions instead of sampling")
    r.add_argument("--frames", type=int, required=True, help="rows to record, all environments together")
    r.add_argument("--out", required=True, help="dataset directory (rerun to resume or extend)")
    r.add_argument("--layers", help="comma-separated layer names whose activations to store")
    add_seed_arg(r)
    r.add_argument("--num-envs", type=int, help="environments played at once (default 64)")
    # The choices are HeistConfig's DISTRIBUTION_MODES, spelled out: importing them would import jax.
    r.add_argument("--distribution-mode", choices=["easy", "hard"], help="Heist's difficulty (default easy)")
    r.add_argument("--num-levels", type=int, help="levels to draw from (default 0: unbounded)")
    r.add_argument("--start-level", type=int, help="first level of that range (default 0)")
    r.set_defaults(func=cmd_rollout)


def cmd_rollout(args) -> None:
    from jaxinterp.envs.heist import HeistConfig
    from jaxinterp.envs.rollout import agent_policy, collect, random_policy

    layers = [x for x in (args.layers or "").split(",") if x]
    if args.random:
        if layers:
            raise JaxinterpError("--layers needs an agent; drop --random or --layers")
        policy = random_policy()
    else:
        policy = agent_policy(load(args.checkpoint), greedy=args.greedy, layers=layers)
    config = HeistConfig(
        seed=args.seed,
        **given(
            num_envs=args.num_envs,
            distribution_mode=args.distribution_mode,
            num_levels=args.num_levels,
            start_level=args.start_level,
        ),
    )
    collect(args.out, frames=args.frames, policy=policy, env_config=config, seed=args.seed, layers=layers)


def _add_evaluate(sub) -> None:
    e = sub.add_parser(
        "evaluate", help="mean return (95%% interval) and success rate, beside the random policy"
    )
    e.add_argument("checkpoint", nargs="?", help="checkpoint (default: the shipped agent)")
    e.add_argument("--episodes", type=int, help="episodes of each policy (default 1000)")
    e.add_argument(
        "--levels",
        choices=["unseen", "train"],
        help="levels the run never trained on, or its own (default unseen)",
    )
    add_seed_arg(e)
    e.add_argument("--greedy", action="store_true", help="argmax actions instead of sampling from the logits")
    e.add_argument("--json", help="also write the results to this JSON file")
    e.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> None:
    from jaxinterp.atomic import write_text
    from jaxinterp.rl.evaluate import evaluate

    agent = load(args.checkpoint)
    options = given(episodes=args.episodes, levels=args.levels)
    results = evaluate(agent, seed=args.seed, greedy=args.greedy, **options)
    for name, ev in results.items():
        print(f"{name:>6}: {ev}")
    if args.json:
        write_text(args.json, json.dumps({k: v.to_dict() for k, v in results.items()}, indent=2))


def _add_export_agent(sub) -> None:
    x = sub.add_parser(
        "export-agent", help="export a training run: .pt, .safetensors, colour stats, model card"
    )
    x.add_argument("run_dir", help="a train-agent run directory")
    x.add_argument("out", help="output stem, e.g. weights/heist-impala")
    x.add_argument(
        "--checkpoint",
        help="one of the run's checkpoints, an iter_NNNNNN directory, possibly copied out of the run (default: "
        "its latest)",
    )
    x.add_argument("--episodes", type=int, help="episodes of the card's evaluation (default 1000)")
    add_seed_arg(x)
    x.set_defaults(func=cmd_export_agent)


def cmd_export_agent(args) -> None:
    from jaxinterp.rl.export import export_agent

    card = export_agent(
        args.run_dir, args.out, seed=args.seed, **given(checkpoint=args.checkpoint, episodes=args.episodes)
    )
    e = card["evaluation"]
    print(
        f"exported {card['frames_trained']:,}-frame agent to {args.out}.*: success {e['agent']['success_rate']:.1%}"
        f" (greedy {e['greedy']['success_rate']:.1%}, random {e['random']['success_rate']:.1%}) on {e['episodes']}"
        " unseen episodes"
    )
