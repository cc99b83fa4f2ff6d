"""Record a policy playing Heist into an on-disk dataset (frames, actions, rewards, activations).

Collection is resumable and reproducible: the policy's key for step `t` is `fold_in(key(seed), t)` and the
env state is saved with every chunk, so stopping and continuing gives the same data as one long run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jaxinterp.envs.dataset import META_FILE, Dataset, DatasetWriter
from jaxinterp.envs.heist import NUM_ACTIONS, Episodes, HeistConfig, HeistEnv
from jaxinterp.errors import JaxinterpError

# policy(key, obs uint8 (N, 64, 64, 3)) -> (actions (N,) int, {layer name: activations (N, ...)}).
# It may carry a `description` string attribute, recorded in meta.json and checked on resume.
Policy = Callable[[jax.Array, np.ndarray], tuple[Any, Mapping[str, Any]]]


def random_policy(num_actions: int = NUM_ACTIONS) -> Policy:
    """Uniformly random actions and no activations: a baseline, and cheap data for tests."""
    if (
        isinstance(num_actions, bool)
        or not isinstance(num_actions, int)
        or not 1 <= num_actions <= NUM_ACTIONS
    ):
        raise JaxinterpError(f"num_actions (={num_actions!r}) must be an int in [1, {NUM_ACTIONS}]")
    sample = jax.jit(
        lambda key, n: jax.random.randint(key, (n,), 0, num_actions, dtype=jnp.int32), static_argnums=1
    )

    def policy(key: jax.Array, obs: np.ndarray) -> tuple[jax.Array, dict[str, jax.Array]]:
        return sample(key, obs.shape[0]), {}

    policy.description = f"random_policy(num_actions={num_actions})"
    return policy


def _describe(policy: Policy) -> str:
    return (
        getattr(policy, "description", None) or getattr(policy, "__qualname__", None) or type(policy).__name__
    )


@contextlib.contextmanager
def _deferred_sigint() -> Iterator[Callable[[], bool]]:
    """Turn the first Ctrl-C into a flag checked between steps, so no step is half recorded.

    A second Ctrl-C interrupts at once. Signals reach only the main thread, so elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    pressed: list[bool] = []

    def handler(signum: int, frame: Any) -> None:
        if pressed:
            raise KeyboardInterrupt
        pressed.append(True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: bool(pressed)
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)


def _to_rows(steps: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-step batches of (num_envs, ...) arrays -> step-major rows (steps * num_envs, ...)."""
    return {k: np.stack([s[k] for s in steps]).reshape(-1, *steps[0][k].shape[1:]) for k in steps[0]}


def _check_resume(meta: Mapping[str, Any], expected: Mapping[str, Any], path: Path) -> None:
    recorded = {**meta, "layers": list(meta["layers"])}
    for key, value in expected.items():
        if recorded[key] != value:
            raise JaxinterpError(
                f"{path} was collected with {key}={recorded[key]!r}, not {value!r}; pass the same {key} "
                "to continue it, or collect into a new directory"
            )


def collect(
    out_dir: str | os.PathLike,
    *,
    frames: int,
    policy: Policy,
    env_config: HeistConfig,
    seed: int,
    chunk_frames: int = 4096,
    layers: Sequence[str] = (),
    progress: bool = True,
    policy_name: str | None = None,
) -> Dataset:
    """Run `policy` on `env_config.num_envs` Heist games until `out_dir` holds `frames` rows; return it.

    Row `t * num_envs + i` is env `i` at step `t`: the obs the policy saw, the action it took, the reward
    that earned and whether the episode ended there. `frames` is rounded up and `chunk_frames` down to
    whole steps. `layers` names the policy activations to store. If `out_dir` already holds a dataset, it
    is continued with the same data an uninterrupted run would give; seed, env config, layers and
    `policy_name` (default: the policy's `description` or qualified name) must match it. A dataset already
    at least `frames` long is returned as is. On Ctrl-C the steps so far are saved before re-raising.
    """
    for name, value, low in (("frames", frames, 0), ("chunk_frames", chunk_frames, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise JaxinterpError(f"{name} (={value!r}) must be an int >= {low}")
    layers = tuple(layers)
    path = Path(out_dir)
    settings = {
        "env_config": env_config.to_dict(),
        "seed": seed,
        "policy": policy_name or _describe(policy),
        "layers": list(layers),
    }
    if (path / META_FILE).exists():
        writer = DatasetWriter.open(path)
        _check_resume(writer.meta, settings, path)
    else:
        writer = DatasetWriter.create(
            path, env_config=env_config, seed=seed, policy=settings["policy"], layers=layers
        )

    n = env_config.num_envs
    total_steps = -(-frames // n)
    if writer.meta["steps"] < total_steps:
        _run(writer, policy, env_config, seed, layers, total_steps, max(1, chunk_frames // n), progress)
    dataset = Dataset(path)
    if progress:
        tqdm.write(f"{path}: {len(dataset)} frames; {dataset.summary()}")
    return dataset


def _run(
    writer: DatasetWriter,
    policy: Policy,
    env_config: HeistConfig,
    seed: int,
    layers: tuple[str, ...],
    total_steps: int,
    chunk_steps: int,
    progress: bool,
) -> None:
    """The collection loop: step, buffer, write a chunk every `chunk_steps`; flush what it has on Ctrl-C."""
    n = env_config.num_envs
    env = HeistEnv(env_config)
    state = writer.resume_state()
    if state is not None:
        env.set_state(state)
    key = jax.random.key(seed)
    buffer: list[dict[str, np.ndarray]] = []  # steps since the last chunk
    finished: list[Episodes] = []
    bar = tqdm(
        total=total_steps * n, initial=env.steps * n, unit="frame", unit_scale=True, disable=not progress
    )

    def write_chunk() -> None:
        writer.append(_to_rows(buffer), env.get_state())
        buffer.clear()
        finished.append(env.pop_episodes())
        bar.set_postfix_str(str(Episodes.concatenate(finished).summary()), refresh=False)

    try:
        with _deferred_sigint() as interrupted:
            obs = env.observe()
            while env.steps < total_steps:
                actions, activations = policy(jax.random.fold_in(key, env.steps), obs)
                missing = [layer for layer in layers if layer not in activations]
                if missing:
                    raise JaxinterpError(
                        f"policy returned no activations for layers {missing}; it returns {sorted(activations)}"
                    )
                row = {
                    "frames": obs,
                    "actions": np.asarray(actions),
                    "episode_ids": env.episode_id.copy(),
                    "level_seeds": env.level_seed.copy(),
                    "objects": env.object_maps(),
                    **{layer: np.asarray(activations[layer], np.float32) for layer in layers},
                }
                for layer in layers:
                    if row[layer].shape[:1] != (n,):
                        raise JaxinterpError(
                            f"activations of {layer!r} have shape {row[layer].shape}; expected ({n}, ...)"
                        )
                obs, row["rewards"], row["dones"], _ = env.step(row["actions"])
                buffer.append(row)
                bar.update(n)
                if len(buffer) == chunk_steps:
                    write_chunk()
                if interrupted():
                    raise KeyboardInterrupt
            if buffer:
                write_chunk()
    except KeyboardInterrupt:
        # The env state must match the buffer: a second Ctrl-C can cut a step off halfway.
        if buffer and env.steps == writer.meta["steps"] + len(buffer):
            write_chunk()
        elif buffer:
            warnings.warn(
                f"interrupted mid-step: the last {len(buffer) * n} frames were not saved", stacklevel=2
            )
        raise
    finally:
        bar.close()
        env.close()


def agent_policy(agent, *, greedy: bool = False, layers: Sequence[str] = ()) -> Policy:
    """An agent's policy: actions sampled from its logits (or the argmax), plus the named activations."""
    from jaxinterp.models.agent import in_device_passes, preprocess

    layers = agent.check_layers(layers)

    @jax.jit
    def act(params, key, obs):
        acts = in_device_passes(lambda p, o: agent.forward(p, preprocess(o)), params, obs)
        logits = acts[agent.arch.logits]
        action = jnp.argmax(logits, -1) if greedy else jax.random.categorical(key, logits)
        return action.astype(jnp.int32), {n: acts[n] for n in layers}

    def policy(key: jax.Array, obs: np.ndarray) -> tuple[jax.Array, dict[str, jax.Array]]:
        return act(agent.params, key, obs)

    policy.description = f"{agent.arch.name} agent ({'greedy' if greedy else 'sampled'})"
    return policy
