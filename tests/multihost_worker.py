"""Subprocess for the engine's sharding tests: one visualization run on however many devices/processes JAX has.

    python tests/multihost_worker.py OUT.npz                      # this process's devices (XLA_FLAGS may fake 8)
    python tests/multihost_worker.py OUT.npz PORT PROCESS_ID N    # one process of an N-process jax.distributed job

Process 0 writes the result; the test compares it with the same run in one process on one device, and a deeper
layer's host loop with its scan.
"""

from __future__ import annotations

import sys

import jax
import numpy as np

LAYER = "conv_seqs.0.conv"  # the first convolution: cheap to compile, and the same machinery as any layer
DEEP_LAYER = "conv_seqs.1.res_block1"
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

    agent = tiny_agent()
    r = make_visualize(agent, objectives.channel(LAYER), config())(SEED, CHANNELS)
    # A deeper layer as one scan and as the host loop of jitted steps (steps queued one after another on every
    # device): with collectives in its steps, 64 of them deadlocked XLA:CPU's rendezvous on 2 host devices.
    deep = {
        mode: make_visualize(agent, objectives.channel(DEEP_LAYER), config(scan=mode == "scan", steps=64))(
            SEED, CHANNELS
        )
        for mode in ("scan", "loop")
    }
    if jax.process_index() == 0:
        np.savez(
            out,
            images=r.images,
            values=r.values,
            losses=r.losses,
            deep_scan=deep["scan"].images,
            deep_loop=deep["loop"].images,
            devices=len(jax.devices()),
            processes=jax.process_count(),
        )
    if len(argv) > 1:
        jax.distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1:])
