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

if torch is not None:
    # The parity tests' reference computes in IEEE float32 whatever the machine and whatever else ran in this
    # process: "tf32"/"bf16" here (or a "medium" matmul precision) let oneDNN round convolution and matmul inputs on
    # CPUs with AMX or AVX512-BF16, ~1e-4 off. Both are IEEE by default ("none" follows the parent); pinned so that
    # nothing can change them unseen. jaxinterp's programs stay as users get them: test_models checks every layer
    # of both sides against float64 (issue 26).
    torch.set_float32_matmul_precision("highest")
    torch.backends.mkldnn.fp32_precision = "ieee"  # convolution and matmul inherit it

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
