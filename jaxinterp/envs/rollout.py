"""Record a policy playing Heist into an on-disk dataset (frames, actions, rewards, activations).

Collection is resumable and reproducible: the policy's key for step `t` is `fold_in(key(seed), t)` and the
env state is saved with every chunk, so stopping and continuing gives the same data as one long run.
"""

from __future__ import annotations

import contextlib
import functools
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
from jaxinterp.envs.stepping import Step, keyed, step_policy
from jaxinterp.errors import JaxinterpError
from jaxinterp.models.agent import Agent, in_device_passes, preprocess
from jaxinterp.progress import bar as progress_bar

__all__ = ["Policy", "agent_policy", "collect", "random_policy"]

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

    def policy(key: jax.Array, obs: np.ndarray) -> tuple[jax.Array, dict[str, jax.Array]]:
        return _random_actions(key, n=obs.shape[0], num_actions=num_actions), {}

    policy.description = f"random_policy(num_actions={num_actions})"
    return policy


@functools.partial(jax.jit, static_argnames=("n", "num_actions"))
def _random_actions(key: jax.Array, *, n: int, num_actions: int) -> jax.Array:
    return jax.random.randint(key, (n,), 0, num_actions, dtype=jnp.int32)


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
    buffer: list[dict[str, np.ndarray]] = []  # steps since the last chunk
    finished: list[Episodes] = []
    bar = progress_bar(total_steps * n, desc="collect", unit="frame", enabled=progress, initial=env.steps * n)

    def write_chunk() -> None:
        writer.append(_to_rows(buffer), env.get_state())
        buffer.clear()
        bar.set_postfix_str(str(Episodes.concatenate(finished).summary()), refresh=False)

    try:
        with _deferred_sigint() as interrupted:
            played = step_policy(
                env, keyed(policy, jax.random.key(seed)), steps=total_steps - env.steps, objects=True
            )
            for step in played:
                buffer.append(_row(step, layers, n))
                finished.append(step.episodes)
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


def _row(step: Step, layers: tuple[str, ...], n: int) -> dict[str, np.ndarray]:
    """A step's dataset row: the frames and what the policy did there, with the named activations."""
    missing = [layer for layer in layers if layer not in step.output]
    if missing:
        raise JaxinterpError(
            f"policy returned no activations for layers {missing}; it returns {sorted(step.output)}"
        )
    row = {
        "frames": step.obs,
        "actions": step.actions,
        "episode_ids": step.episode_id,
        "level_seeds": step.level_seed,
        "objects": step.objects,
        **{layer: np.asarray(step.output[layer], np.float32) for layer in layers},
        "rewards": step.reward,
        "dones": step.done,
    }
    for layer in layers:
        if row[layer].shape[:1] != (n,):
            raise JaxinterpError(
                f"activations of {layer!r} have shape {row[layer].shape}; expected ({n}, ...)"
            )
    return row


def agent_policy(agent: Agent, *, greedy: bool = False, layers: Sequence[str] = ()) -> Policy:
    """An agent's policy: actions sampled from its logits (or the argmax), plus the named activations."""
    layers = agent.check_layers(layers)

    def policy(key: jax.Array, obs: np.ndarray) -> tuple[jax.Array, dict[str, jax.Array]]:
        return _agent_act(agent, key, obs, greedy=greedy, layers=layers)

    policy.description = f"{agent.arch.name} agent ({'greedy' if greedy else 'sampled'})"
    return policy


@functools.partial(jax.jit, static_argnames=("greedy", "layers"))
def _agent_act(
    agent: Agent, key: jax.Array, obs: jax.Array, *, greedy: bool, layers: tuple[str, ...]
) -> tuple[jax.Array, dict[str, jax.Array]]:
    acts = in_device_passes(lambda p, o: agent.forward(p, preprocess(o)), agent.params, obs)
    logits = acts[agent.arch.logits]
    action = jnp.argmax(logits, -1) if greedy else jax.random.categorical(key, logits)
    return action.astype(jnp.int32), {n: acts[n] for n in layers}
