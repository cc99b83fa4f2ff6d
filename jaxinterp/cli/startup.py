"""What the ``jaxinterp`` console script sets up before JAX starts: one CPU device per core for the sharded
commands, and the on-disk cache of compiled programs."""

from __future__ import annotations

import os

from jaxinterp.cache import cache_dir

__all__ = ["COMPILE_CACHE_BYTES", "SPLIT_CPU_COMMANDS", "one_cpu_device_per_core", "persistent_compile_cache"]

SPLIT_CPU_COMMANDS = ("visualize", "train-agent", "rollout", "evaluate", "sae")
"""Commands whose work is split over the local devices (data parallel or sharded channels)."""

COMPILE_CACHE_BYTES = 2**30
"""The on-disk compile cache's size; JAX evicts the least recently used programs beyond it."""


def persistent_compile_cache() -> None:
    """Keep compiled XLA programs on disk, so that running a command again skips most of its compiling (a 4-channel
    ``visualize`` on the 2-core CPU: 26-28 s the first time, 14-15 s after; see `benchmarks/RESULTS.md`).

    Where: ``JAXINTERP_COMPILE_CACHE`` (``off`` turns it off), else ``~/.cache/jaxinterp/xla``; a
    ``JAX_COMPILATION_CACHE_DIR`` the user set is left to JAX. Only programs that took over a second to compile
    are kept (JAX's default)."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    where = os.environ.get("JAXINTERP_COMPILE_CACHE", str(cache_dir() / "xla"))
    if where.strip().lower() in ("", "off", "0", "false", "no"):
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", where)
    jax.config.update("jax_compilation_cache_max_size", COMPILE_CACHE_BYTES)


def one_cpu_device_per_core() -> None:
    """Expose each CPU core as a JAX device, unless ``XLA_FLAGS`` already sets a count, so that visualization shards
    its channels and PPO its minibatches over the cores: on 2 cores 1.16-1.60x (visualization) and 1.26x (a PPO
    minibatch) faster than one device running XLA's own threads (`benchmarks/RESULTS.md`). Only takes effect before
    JAX starts its backends; accelerators are unaffected."""
    flags = os.environ.get("XLA_FLAGS", "")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cores > 1 and "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={cores}".strip()
