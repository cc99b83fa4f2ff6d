"""What the ``jaxinterp`` console script sets up before JAX starts: XLA:CPU's faster convolutions, one CPU device
per core for the sharded commands, and the on-disk cache of compiled programs."""

from __future__ import annotations

import os

from jaxinterp.cache import cache_dir

__all__ = [
    "COMPILE_CACHE_BYTES",
    "SPLIT_CPU_COMMANDS",
    "YNN_OFF",
    "no_ynn_fusions",
    "one_cpu_device_per_core",
    "persistent_compile_cache",
]

SPLIT_CPU_COMMANDS = ("visualize", "train-agent", "rollout", "evaluate", "export-agent", "sae")
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


YNN_OFF = "--xla_cpu_experimental_ynn_fusion_type="
"""XLA:CPU with its YNNPACK fusions off: the agent's forward pass runs ~2x faster on the 2-core CPU (32 frames to
the last stage: 23.8 -> 11.6 ms), with float32 results (within 1.6e-6 of the default's, relative)."""

_YNN_MEASURED = ("0.10.",)
"""jaxlib versions the setting was measured on (XLA stops at start-up on a flag it does not know)."""


def no_ynn_fusions() -> None:
    """Turn XLA:CPU's YNNPACK fusions off (`YNN_OFF`), unless ``XLA_FLAGS`` already says how, or the installed
    jaxlib is not one it was measured on. Only takes effect before JAX starts its backends."""
    from importlib.metadata import version

    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_experimental_ynn_fusion_type" not in flags and version("jaxlib").startswith(_YNN_MEASURED):
        os.environ["XLA_FLAGS"] = f"{flags} {YNN_OFF}".strip()


def one_cpu_device_per_core() -> None:
    """Expose each CPU core as a JAX device, unless ``XLA_FLAGS`` already sets a count, so that visualization shards
    its channels and PPO its minibatches over the cores: on 2 cores 1.16-1.60x (visualization) and 1.26x (a PPO
    minibatch) faster than one device running XLA's own threads (`benchmarks/RESULTS.md`). Only takes effect before
    JAX starts its backends; accelerators are unaffected."""
    flags = os.environ.get("XLA_FLAGS", "")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cores > 1 and "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={cores}".strip()
