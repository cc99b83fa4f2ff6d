"""Data parallel over local devices: PPO's update and policy step, and an agent policy, on 2 (fake CPU) devices
equal the same work on one (in a subprocess: the device count is fixed when JAX starts)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, np.ndarray]:
    out = tmp_path_factory.mktemp("devices") / "devices.npz"
    flags = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
    done = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("devices_worker.py")), str(out)],
        env=dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=flags),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    with np.load(out) as f:
        return dict(f)


def _same(results, name, exact=()):
    one = {k.split("_", 1)[1]: v for k, v in results.items() if k.startswith(f"{name}1_")}
    assert one, f"no {name} results"
    for key, value in one.items():
        two = results[f"{name}2_{key}"]
        if key in exact:
            np.testing.assert_array_equal(value, two, err_msg=key)
        else:
            np.testing.assert_allclose(value, two, rtol=1e-4, atol=1e-6, err_msg=key)


def test_ppo_update_on_two_devices_equals_one(results):
    assert "cannot split 4 micro-batches per minibatch evenly over 3 devices (2 local)" in str(
        results["error"]
    )
    _same(results, "ppo", exact=("action",))  # the same actions sampled
    assert results["ppo1_moved"] > 1e-4  # the update did something to compare


def test_agent_policy_on_two_devices_equals_one(results):
    _same(results, "policy", exact=("action",))
