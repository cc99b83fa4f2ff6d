"""Shared helpers of the examples tests (no tests here): random-weight agents built without compiling an init."""

import functools

import jax
import numpy as np

from jaxinterp.models.agent import Agent
from jaxinterp.models.impala import ARCHITECTURES, init_params

SMALL_CHANNELS = (4, 8, 8)
"""IMPALA widths for tests: receptive fields and code paths do not depend on them, run time does."""


@functools.cache
def random_agent(
    arch: str = "impala", *, small: bool = True, positive: bool = False, bias: float = 0.0
) -> Agent:
    """A random-weight agent: He-normal kernels (|kernels| if ``positive``), biases N(0, ``bias``²).

    Drawn with numpy from the params' shapes: compiling Flax's orthogonal init costs seconds on these CPUs.
    """
    kw = {"channels": SMALL_CHANNELS} if small and arch != "interpretable-cnn" else {}
    shapes = jax.eval_shape(lambda: init_params(ARCHITECTURES[arch], jax.random.key(0), num_actions=15, **kw))
    rng = np.random.default_rng(0)

    def draw(path, leaf):
        if path[-1].key == "bias":
            return (bias * rng.standard_normal(leaf.shape)).astype(np.float32)
        fan_in = int(np.prod(leaf.shape[:-1]))
        w = rng.standard_normal(leaf.shape) * np.sqrt(2.0 / fan_in)
        return (np.abs(w) if positive else w).astype(np.float32)

    params = jax.tree_util.tree_map_with_path(draw, shapes)
    return Agent(arch, jax.tree.map(jax.numpy.asarray, params), num_actions=15, **kw)
