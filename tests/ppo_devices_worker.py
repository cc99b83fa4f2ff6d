"""Subprocess for the data-parallel PPO test: one update and one policy step on 1 and on 2 (fake CPU) devices.

XLA_FLAGS=--xla_force_host_platform_device_count=2 python tests/ppo_devices_worker.py OUT.npz
"""

from __future__ import annotations

import dataclasses
import sys

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.agent.ppo import PPOConfig, Transition, make_train
from jaxinterp.errors import JaxinterpError

# 4 envs and minibatches of 8 frames in passes of 2: both split over 2 devices.
CONFIG = PPOConfig(num_envs=4, num_steps=4, num_minibatches=2, update_epochs=2, microbatch_size=2)


def run(devices: int) -> dict[str, np.ndarray]:
    trainer = make_train(dataclasses.replace(CONFIG, devices=devices))
    state = trainer.init(jax.random.key(1))
    k = jax.random.split(jax.random.key(2), 4)
    shape = (CONFIG.num_steps, CONFIG.num_envs)
    obs = jax.random.randint(k[0], (*shape, 64, 64, 3), 0, 256).astype(jnp.uint8)
    action, logp, value = jax.vmap(lambda o, kk: trainer.policy_step(state.params, o, kk))(
        obs, jax.random.split(k[1], CONFIG.num_steps)
    )
    traj = Transition(obs, action, logp, value, jax.random.uniform(k[2], shape), jnp.zeros(shape, bool))
    new, metrics = trainer.update(state, traj, jnp.zeros(CONFIG.num_envs))
    leaves = jax.tree.leaves(new.params)
    moved = max(float(jnp.abs(a - b).max()) for a, b in zip(leaves, jax.tree.leaves(state.params)))
    return {"action": action, "logp": logp, "value": value, "moved": np.asarray(moved)} | {
        **{f"p{i}": x for i, x in enumerate(leaves)},
        **{f"m_{name}": m for name, m in metrics.items()},
    }


def main(out: str) -> None:
    assert jax.device_count() == 2, jax.devices()
    try:
        make_train(dataclasses.replace(CONFIG, devices=3))
    except JaxinterpError as e:
        error = str(e)
    else:
        error = ""
    one, two = run(1), run(2)
    np.savez(
        out, error=error, **{f"one_{k}": v for k, v in one.items()}, **{f"two_{k}": v for k, v in two.items()}
    )


if __name__ == "__main__":
    main(sys.argv[1])
