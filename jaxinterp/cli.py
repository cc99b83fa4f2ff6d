"""The ``jaxinterp`` command line: one entry point, one subcommand per job. Errors print as one line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from jaxinterp import _xla  # noqa: F401  (XLA flags before jax starts)
from jaxinterp.errors import JaxinterpError


def _parse_config(text: str | None) -> dict:
    """``--config``: a JSON file, or inline ``key=value,key=value`` (values parsed as JSON where they can be)."""
    if not text:
        return {}
    if Path(text).is_file():
        return json.loads(Path(text).read_text())
    out = {}
    for item in text.split(","):
        if "=" not in item:
            raise JaxinterpError(f"--config expects a JSON file or key=value pairs, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def cmd_train_agent(args) -> None:
    from jaxinterp.agent.ppo import PPOConfig
    from jaxinterp.agent.train import train

    fields = _parse_config(args.config) | ({"arch": args.arch} if args.arch else {})
    state = train(PPOConfig.from_dict(fields), args.out, frames=args.frames, seed=args.seed,
                  checkpoint_every_s=args.checkpoint_every)
    print(f"{int(state.frames):,} frames trained; checkpoints in {Path(args.out) / 'checkpoints'}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jaxinterp", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train-agent", help="train a Heist agent with PPO (resumable: rerun to continue)")
    t.add_argument("--frames", type=int, required=True, help="total environment frames to train to")
    t.add_argument("--out", required=True, help="run directory (checkpoints, metrics.jsonl, learning_curve.png)")
    t.add_argument("--arch", help="impala (default), impala-procgen-tools or interpretable-cnn")
    t.add_argument("--config", help="JSON file or key=value,... overriding PPO defaults (e.g. update_epochs=1)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--checkpoint-every", type=float, default=300.0, help="seconds between checkpoints")
    t.set_defaults(func=cmd_train_agent)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except JaxinterpError as e:
        print(f"jaxinterp: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
