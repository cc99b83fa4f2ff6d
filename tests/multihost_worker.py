"""Subprocess for the engine's sharding tests: one visualization run on however many devices/processes JAX has.

    python tests/multihost_worker.py OUT.npz                      # this process's devices (XLA_FLAGS may fake 8)
    python tests/multihost_worker.py OUT.npz PORT PROCESS_ID N    # one process of an N-process jax.distributed job

Process 0 writes the result; the test compares it with the same run in one process on one device.
"""

from __future__ import annotations

import sys

import jax
import numpy as np

LAYER = "conv_seqs.0.conv"  # the first convolution: cheap to compile, and the same machinery as any layer
CHANNELS = (0, 1, 2, 3)
SEED = 3


def tiny_agent():
    """A 4-channel IMPALA net: the smallest that still has pooling and residual blocks."""
    from jaxinterp.models.agent import Agent

    return Agent.random("impala", channels=(4, 4, 4))


# XLA's backend optimizations cost more compile time than these short runs save (measured ~3x faster compiles).
FAST_COMPILE = (("xla_backend_optimization_level", 0),)


def config(**overrides):
    from jaxinterp.featviz.engine import VisualizeConfig

    base = {"steps": 16, "thresholds": (0, 4), "facets": 2, "compiler_options": FAST_COMPILE}
    return VisualizeConfig(**(base | overrides))


def main(argv: list[str]) -> None:
    out = argv[0]
    if len(argv) > 1:
        port, pid, n = argv[1], int(argv[2]), int(argv[3])
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=f"127.0.0.1:{port}",
            num_processes=n,
            process_id=pid,
            initialization_timeout=60,
        )
    from jaxinterp.featviz import objectives
    from jaxinterp.featviz.engine import make_visualize

    visualize = make_visualize(tiny_agent(), objectives.channel(LAYER), config())
    r = visualize(SEED, CHANNELS)
    if jax.process_index() == 0:
        np.savez(
            out,
            images=r.images,
            values=r.values,
            losses=r.losses,
            devices=len(jax.devices()),
            processes=jax.process_count(),
        )
    if len(argv) > 1:
        jax.distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1:])
