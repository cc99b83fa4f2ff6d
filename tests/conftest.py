"""Shared fixtures: real Heist frames, and torch as a test-only tool that CI requires."""

import os

import numpy as np
import pytest

try:
    import torch
except ImportError:  # torch is a test-only tool, never a runtime dependency
    if os.environ.get("JAXINTERP_REQUIRE_TORCH"):
        raise
    torch = None

needs_torch = pytest.mark.skipif(
    torch is None, reason="torch not installed (CI sets JAXINTERP_REQUIRE_TORCH=1)"
)


@pytest.fixture(scope="session")
def heist_frames() -> np.ndarray:
    """16 real Heist frames (uint8, N x 64 x 64 x 3) from random play on a few levels."""
    from procgen import ProcgenGym3Env

    env = ProcgenGym3Env(
        num=4, env_name="heist", distribution_mode="easy", num_levels=0, start_level=0, rand_seed=1
    )
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(4):
        for _ in range(5):
            env.act(rng.integers(0, 15, size=4).astype(np.int32))
        frames.append(env.observe()[1]["rgb"].copy())
    return np.concatenate(frames)
