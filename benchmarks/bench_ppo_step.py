"""The PPO minibatch step (forward, loss, gradient, Adam) in ms per frame, in one process:

* three max-pool implementations swapped into the same network, each minibatch in one pass: jaxinterp's
  custom-VJP pool, the same taps differentiated by JAX (9 strided slices), and ``lax.reduce_window``;
* one minibatch (``--minibatch``) with its gradient accumulated over micro-batches of several sizes
  (``PPOConfig.microbatch_size``; the update is the same, only the speed differs);
* the same minibatch split over 1, 2, ... devices (``PPOConfig.devices``): the script exposes one CPU device per
  core it may run on, as ``jaxinterp train-agent`` does, so pin it to one core for the first two tables.

Run: taskset -c 0 uv run python benchmarks/bench_ppo_step.py [--batches 128,512] [--microbatches 16,32,64,512]
     uv run python benchmarks/bench_ppo_step.py --batches "" --microbatches 32   # all cores: the devices table
"""

import argparse
import time

from jaxinterp.cli.startup import one_cpu_device_per_core

one_cpu_device_per_core()  # before JAX starts its backends

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.envs.heist import NUM_ACTIONS
from jaxinterp.models import impala, layers
from jaxinterp.rl.ppo import PPOConfig, make_train


def slice_pool(x):
    """The previous pool: the max of 9 strided slices of the -inf padded input, differentiated by JAX."""
    out = None
    for tap in layers._pool_windows(x):
        out = tap if out is None else jnp.maximum(out, tap)
    return out


def reduce_window_pool(x):
    pads = ((0, 0), (1, 1), (1, 1), (0, 0))
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), pads)


POOLS = {
    "custom-VJP (jaxinterp)": layers.max_pool,
    "strided slices": slice_pool,
    "reduce_window": reduce_window_pool,
}


def step_ms_per_frame(
    batch: int, pool, repeats: int, microbatch: int | None = None, devices: int = 1
) -> float:
    impala.max_pool = pool  # the module-level name the network calls
    make_train.cache_clear()
    config = PPOConfig(
        num_envs=batch,
        num_steps=1,
        num_minibatches=1,
        update_epochs=1,
        microbatch_size=microbatch or batch,
        devices=devices,
    )
    trainer = make_train(config)
    state = trainer.init(jax.random.key(0))
    k = jax.random.split(jax.random.key(1), 3)
    mb = {
        "obs": jax.random.randint(k[0], (batch, 64, 64, 3), 0, 256).astype(jnp.uint8),
        "action": jax.random.randint(k[1], (batch,), 0, NUM_ACTIONS),
        "logp": jnp.full((batch,), -np.log(NUM_ACTIONS)),
        "value": jnp.zeros(batch),
        "adv": jax.random.normal(k[2], (batch,)),
        "ret": jnp.ones(batch),
    }
    step = jax.jit(trainer.minibatch_step)
    params, opt = state.params, state.opt_state
    jax.block_until_ready(step(params, opt, mb))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(step(params, opt, mb))
        times.append(time.perf_counter() - t)
    return min(times) / batch * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batches", default="128,512")
    p.add_argument("--minibatch", type=int, default=512)
    p.add_argument("--microbatches", default="16,32,64,128,512")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    original = impala.max_pool
    print(f"# jax {jax.__version__}; PPO minibatch step, ms per frame (best of {args.repeats})")
    print("| minibatch (one pass) | " + " | ".join(POOLS) + " |\n|---|" + "---|" * len(POOLS))
    try:
        for b in [int(b) for b in args.batches.split(",") if b]:
            row = [step_ms_per_frame(b, pool, args.repeats) for pool in POOLS.values()]
            print(f"| {b} | " + " | ".join(f"{t:.2f}" for t in row) + " |", flush=True)
    finally:
        impala.max_pool = original
    print(f"\n| minibatch {args.minibatch}, micro-batch | ms per frame |\n|---|---|")
    micro = [int(m) for m in args.microbatches.split(",")]
    for m in micro:
        print(f"| {m} | {step_ms_per_frame(args.minibatch, original, args.repeats, m):.2f} |", flush=True)
    if len(jax.devices()) > 1:
        print(f"\n| minibatch {args.minibatch} in passes of {micro[0]}, devices | ms per frame |\n|---|---|")
        for d in range(1, len(jax.devices()) + 1):
            ms = step_ms_per_frame(args.minibatch, original, args.repeats, micro[0], d)
            print(f"| {d} | {ms:.2f} |", flush=True)


if __name__ == "__main__":
    main()
