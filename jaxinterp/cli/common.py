"""What the command groups share: the agent and layer flags, parsing of small flag values.

Nothing here imports jax or numpy at module level: building the parser must stay fast (`jaxinterp --help`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jaxinterp.errors import JaxinterpError

if TYPE_CHECKING:
    from jaxinterp.models.agent import Agent

__all__ = [
    "SEED",
    "add_checkpoint_arg",
    "add_layer_over_dataset_args",
    "add_seed_arg",
    "checkpoint",
    "given",
    "load",
    "parse_config",
    "parse_ints",
]

SEED = 0
"""Every ``--seed``'s default: the seed every library function defaults to."""


def add_checkpoint_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", help="agent weights (default: the shipped agent in weights/)")


def add_seed_arg(p: argparse.ArgumentParser, help: str = "seed of every random draw") -> None:
    p.add_argument("--seed", type=int, default=SEED, help=f"{help}; default {SEED}")


def add_layer_over_dataset_args(p: argparse.ArgumentParser) -> None:
    """The arguments of a command that scans a layer's channels over a rollout dataset."""
    add_checkpoint_arg(p)
    p.add_argument(
        "--layer", required=True, help="layer name, e.g. conv_seqs.2.res_block1 (jaxinterp info lists them)"
    )
    p.add_argument("--dataset", required=True, help="a rollout dataset directory (jaxinterp rollout)")
    p.add_argument("--channels", default="all", help="all | 3 | 0-15 | 1,4,9")


def given(**options: Any) -> dict[str, Any]:
    """The options the user gave (flags left unset are None), so that the library's own defaults apply to the rest:
    the CLI repeats none of them."""
    return {k: v for k, v in options.items() if v is not None}


def parse_config(text: str | None) -> dict:
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


def parse_ints(text: str | None, flag: str, expected: str) -> tuple[int, ...] | None:
    """Comma-separated ints of ``flag`` (None when it is not given); otherwise a one-line error saying what
    ``expected`` looks like."""
    if text is None:
        return None
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise JaxinterpError(f"{flag} {text!r}: give {expected}") from None


def checkpoint(path: str | None) -> str | Path:
    """``path``, or the shipped agent's weights when none is given."""
    from jaxinterp.weights.store import default_checkpoint

    return path or default_checkpoint()


def load(path: str | None) -> Agent:
    """The agent of weights (a file or a saved orbax directory) or of a training run directory (its latest policy);
    the shipped agent without a path."""
    from jaxinterp.weights.store import load_agent

    return load_agent(checkpoint(path))
