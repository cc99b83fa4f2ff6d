"""Tests for the feature-visualization engine: batching, chunking, sharding and multi-process give the same images.

One tiny agent (4 channels per stage) and one config serve every test, so the file compiles a handful of programs.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import multihost_worker as worker
import numpy as np
import pytest

from jaxinterp.errors import JaxinterpError
from jaxinterp.featviz import objectives as obj
from jaxinterp.featviz.engine import make_visualize
from jaxinterp.featviz.objectives import Objective

WORKER = Path(__file__).with_name("multihost_worker.py")
TIMEOUT_S = 180
# Batch sizes and device counts may round differently in XLA's convolutions (measured: chunking bit-identical,
# 8 devices within 1e-6 after 16 Adam steps).
ATOL = 1e-4


@pytest.fixture(scope="module")
def agent():
    return worker.tiny_agent()


@pytest.fixture(scope="module")
def visualize(agent):
    """Two channels per chunk: the four channels of the workers' run take two chunks here."""
    v = make_visualize(agent, obj.channel(worker.LAYER), worker.config(max_images=4))
    assert v.chunk_channels == 2
    return v


@pytest.fixture(scope="module")
def batched(visualize):
    """The reference: channels vmapped two at a time in two chunks, on one device."""
    return visualize(worker.SEED, worker.CHANNELS)


def _env(**extra):
    env = dict(os.environ, JAX_PLATFORMS="cpu", **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    return env


def _start_sharded(tmp_path_factory, devices: int):
    out = tmp_path_factory.mktemp(f"sharded{devices}") / "out.npz"
    flags = (os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}").strip()
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), str(out)],
        env=_env(XLA_FLAGS=flags),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    return proc, out


@pytest.fixture(scope="module")
def sharded_runs(tmp_path_factory):
    """Start the 8- and 2-fake-device subprocesses early; the tests wait for them. (On 2 host devices, not on
    8, device collectives in the host loop's steps deadlocked XLA:CPU.)"""
    runs = {n: _start_sharded(tmp_path_factory, n) for n in (8, 2)}
    yield runs
    for proc, _ in runs.values():
        if proc.poll() is None:
            proc.kill()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def distributed_run(tmp_path_factory):
    """Start the two processes of a jax.distributed job early; the test waits for them."""
    out, port = tmp_path_factory.mktemp("distributed") / "out.npz", _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(out), str(port), str(i), "2"],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for i in range(2)
    ]
    yield procs, out
    for p in procs:
        if p.poll() is None:
            p.kill()


def _assert_same(result, path: Path, proc: subprocess.Popen):
    try:
        log, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"worker timed out after {TIMEOUT_S}s: {proc.communicate()[0].decode()[-2000:]}")
    assert proc.returncode == 0, log.decode()[-3000:]
    with np.load(path) as z:
        np.testing.assert_allclose(z["images"], result.images, atol=ATOL)
        np.testing.assert_allclose(z["values"], result.values, rtol=ATOL, atol=ATOL)
        np.testing.assert_allclose(z["deep_loop"], z["deep_scan"], atol=ATOL)
        return int(z["devices"]), int(z["processes"])


def test_result_shapes_thresholds_and_no_nan(
    sharded_runs, distributed_run, batched
):  # subprocesses start first
    t, c, k = 3, len(worker.CHANNELS), 2
    assert batched.thresholds == (0, 4, 16)
    assert batched.images.shape == (t, c, k, 64, 64, 3) and batched.values.shape == (t, c, k)
    assert batched.losses.shape == (c, k, 16)
    assert np.isfinite(batched.images).all() and (batched.images >= 0).all() and (batched.images <= 1).all()
    # Intermediate images are kept and differ from the start and the end.
    assert not np.allclose(batched.at(4), batched.at(0)) and not np.allclose(batched.at(4), batched.final)
    # Facets start from different noise.
    assert not np.allclose(batched.images[0, :, 0], batched.images[0, :, 1])


def test_short_optimization_raises_the_channel_well_above_init(agent, batched):
    # Scale: how much the channel varies over random noise images (uniform in [0, 1]).
    noise = jax.random.uniform(jax.random.key(0), (16, 64, 64, 3))
    on_noise = jax.jit(lambda x: agent.forward(agent.params, x)[worker.LAYER].mean((1, 2)))(noise)
    spread = np.asarray(on_noise).std(axis=0)[list(worker.CHANNELS), None]
    start, end = batched.values[0], batched.values[-1]
    gain = (end - start) / spread  # measured: 3.7 to 13.6 after 16 steps
    assert (gain > 2).all() and gain.mean() > 5, gain
    # Not a white or flat collapse: the images keep contrast and are not saturated.
    final = batched.final
    assert final.std(axis=(2, 3)).mean() > 0.02 and (final > 0.98).mean() < 0.5


def test_a_job_does_not_depend_on_its_batch_position_or_neighbours(visualize, batched):
    # Channels 3 and 1 were in different chunks, at position 1; here they share one, 3 first.
    moved = visualize(worker.SEED, [3, 1])
    np.testing.assert_allclose(moved.images[:, 0], batched.images[:, 3], atol=ATOL)
    np.testing.assert_allclose(moved.images[:, 1], batched.images[:, 1], atol=ATOL)
    np.testing.assert_allclose(moved.losses, batched.losses[[3, 1]], rtol=ATOL, atol=ATOL)
    # The same seed again is bit-identical; another seed is not.
    np.testing.assert_array_equal(visualize(worker.SEED, [3, 1]).images, moved.images)
    assert not np.allclose(visualize(worker.SEED + 1, [3, 1]).images, moved.images)


@pytest.mark.parametrize("devices", [8, 2])
def test_sharded_over_devices_equals_one(batched, sharded_runs, devices):
    # 8: 4 channels padded to 8, one per device, each device running its job alone, in one chunk.
    proc, out = sharded_runs[devices]
    assert _assert_same(batched, out, proc) == (devices, 1)


def test_two_processes_equal_one(batched, distributed_run):
    # jax.distributed over gloo: two processes, one device each, two channels per device.
    procs, out = distributed_run
    try:
        log1, _ = procs[1].communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"process 1 timed out after {TIMEOUT_S}s")
    assert procs[1].returncode == 0, log1.decode()[-3000:]
    devices, processes = _assert_same(batched, out, procs[0])
    assert (devices, processes) == (2, 2)


def test_nan_is_a_clear_error(agent):
    # An objective that reads no layer compiles in a moment; log of a negative number is NaN.
    bad = Objective(lambda acts, images, index: jnp.log(images.mean((1, 2, 3)) - 2.0), (), "broken()")
    visualize = make_visualize(agent, bad, worker.config(steps=1, thresholds=(), facets=1, transforms=None))
    with pytest.raises(JaxinterpError, match=r"broken\(\) gave NaN.*channel\(s\) 0.*lower the learning rate"):
        visualize(0)


def test_bad_layer_channel_objective_and_config_are_clear_errors(agent):
    with pytest.raises(JaxinterpError, match="unknown layer 'nope'.*valid layers"):
        make_visualize(agent, obj.channel("nope"))
    with pytest.raises(JaxinterpError, match="channel 9 is out of range"):
        make_visualize(agent, obj.channel(worker.LAYER, 9))
    with pytest.raises(JaxinterpError, match="must be an Objective"):
        make_visualize(agent, "conv_seqs.0.conv:1")
    visualize = make_visualize(agent, obj.channel(worker.LAYER))
    with pytest.raises(JaxinterpError, match="index 4 is out of range.*0-3"):
        visualize(0, [1, 4])
    with pytest.raises(JaxinterpError, match="thresholds"):
        worker.config(steps=8, thresholds=(16,))


def test_scan_and_host_loop_agree(agent):
    # The cheapest objective that still runs the network: the first convolution, 4 steps, no transforms.
    config = worker.config(steps=4, thresholds=(), facets=1, transforms=None)
    objective = obj.channel("conv_seqs.0.conv")
    scan = make_visualize(agent, objective, config)(0, [1, 2])
    loop = make_visualize(agent, objective, config.__class__(**{**config.__dict__, "scan": False}))(0, [1, 2])
    np.testing.assert_allclose(loop.images, scan.images, atol=1e-5)
    np.testing.assert_allclose(loop.losses, scan.losses, rtol=1e-4, atol=1e-5)
    assert jax.devices()[0].platform == "cpu"
