"""Subprocess for `test_devices.py`: a PPO update and policy step, and an agent policy (rollouts), each on 1 and
on 2 (fake CPU) devices.

XLA_FLAGS=--xla_force_host_platform_device_count=2 python tests/devices_worker.py OUT.npz
"""

from __future__ import annotations

import dataclasses
import sys

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.errors import JaxinterpError
from jaxinterp.rl.ppo import PPOConfig, Transition, make_train

# 4 envs and minibatches of 8 frames in passes of 2: both split over 2 devices.
CONFIG = PPOConfig(num_envs=4, num_steps=4, num_minibatches=2, update_epochs=2, microbatch_size=2)


def ppo(devices: int) -> dict[str, np.ndarray]:
    trainer = make_train(dataclasses.replace(CONFIG, devices=devices))
    assert len(trainer.devices) == devices, trainer.devices
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


def policy(devices: int) -> dict[str, np.ndarray]:
    """An agent policy's activations for 32 x devices envs: passes of 32, one per device."""
    from jaxinterp.envs.rollout import agent_policy
    from jaxinterp.models.agent import Agent

    agent = Agent.random("impala", channels=(4, 4, 4))
    obs = np.random.default_rng(1).integers(0, 256, (32 * devices, 64, 64, 3), np.uint8)
    action, acts = agent_policy(agent, layers=["hidden_fc"])(jax.random.key(0), obs)
    return {"action": action[:32], "hidden": acts["hidden_fc"][:32]}


def main(out: str) -> None:
    assert jax.device_count() == 2, jax.devices()
    try:
        make_train(dataclasses.replace(CONFIG, devices=3))
    except JaxinterpError as e:
        error = str(e)
    else:
        error = ""
    results = {"error": error}
    for name, fn in (("ppo", ppo), ("policy", policy)):
        for devices in (1, 2):
            results |= {f"{name}{devices}_{k}": v for k, v in fn(devices).items()}
    np.savez(out, **results)


if __name__ == "__main__":
    main(sys.argv[1])
