"""The ``jaxinterp`` command line: one entry point, one subcommand per job. Errors print as one line.

One module per command group (``agent``, ``examples``, ``report``, ``featviz``, ``sae``, ``intervene``), each registering its
parsers and holding their handlers; the handlers import the library lazily, so that building the parser (and
``jaxinterp --help``) stays fast. Coordinates on the command line are column first (``X,Y``), as in
``neuron@x,y``.
"""

from __future__ import annotations

import argparse
import sys

import jaxinterp
from jaxinterp.cli import agent, examples, featviz, intervene, report, sae
from jaxinterp.cli.startup import (
    SPLIT_CPU_COMMANDS,
    no_ynn_fusions,
    one_cpu_device_per_core,
    persistent_compile_cache,
)
from jaxinterp.errors import JaxinterpError

__all__ = ["build_parser", "entry", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jaxinterp",
        description="Interpretability for Procgen Heist agents, in JAX.",
        epilog="Start with `jaxinterp report --out report/` (every channel of the shipped agent on one page); "
        "`jaxinterp COMMAND --help` lists a command's options.",
    )
    p.add_argument("--version", action="version", version=f"jaxinterp {jaxinterp.__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for group in (
        agent,
        examples,
        report,
        featviz,
        sae,
        intervene,
    ):  # the order `jaxinterp --help` lists them in
        group.add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    return _run(build_parser().parse_args(argv))


def entry() -> int:
    """The ``jaxinterp`` console script: `main` in a fresh process, where the sharded commands first split the CPU.
    The arguments are parsed first, so that ``--help`` and usage errors answer without starting JAX."""
    args = build_parser().parse_args(sys.argv[1:])
    no_ynn_fusions()
    if args.command in SPLIT_CPU_COMMANDS:
        one_cpu_device_per_core()
    persistent_compile_cache()
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        args.func(args)
    except JaxinterpError as e:
        print(f"jaxinterp: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and friends
        sys.stderr.close()
    return 0
