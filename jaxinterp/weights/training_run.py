"""A ``jaxinterp train-agent`` run directory and its latest policy, read without building the trainer.

Layout: ``config.json`` (the PPO config and seed) and ``checkpoints/iter_NNNNNN/`` holding ``state/`` (the train
state, orbax) and ``env.npz`` (the environments). Reading the policy restores only the params (and the frame count)
from ``state/``: no optimizer, no device mesh, so a run trained on several devices loads on one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import jax
import numpy as np

from jaxinterp.errors import JaxinterpError
from jaxinterp.models.agent import Agent
from jaxinterp.models.impala import Architecture, get_architecture, init_params

__all__ = [
    "CHECKPOINTS",
    "CONFIG_FILE",
    "ENVS_FILE",
    "STATE_DIR",
    "checkpoints",
    "is_run_dir",
    "latest_checkpoint",
    "load_run_agent",
    "with_latest",
]

CONFIG_FILE = "config.json"
CHECKPOINTS = "checkpoints"
STATE_DIR = "state"  # in a checkpoint: the train state (orbax)
ENVS_FILE = "env.npz"  # in a checkpoint: the environments' state and observations
T = TypeVar("T")


def is_run_dir(path: str | Path) -> bool:
    """Whether ``path`` looks like a training run (a config and a checkpoints folder)."""
    path = Path(path)
    return (path / CONFIG_FILE).is_file() and (path / CHECKPOINTS).is_dir()


def checkpoints(run_dir: str | Path) -> list[Path]:
    """The run's complete checkpoints, oldest first (a checkpoint being written has a suffix and is left out)."""
    folder = Path(run_dir) / CHECKPOINTS
    return sorted(folder.glob("iter_*[0-9]")) if folder.exists() else []


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = checkpoints(run_dir)
    return found[-1] if found else None


def with_latest(run_dir: str | Path, use: Callable[[Path], T], attempts: int = 3) -> T | None:
    """``use(latest checkpoint)``, or None if there is none. A run that is training meanwhile deletes its older
    checkpoints as it saves new ones; if the one being read vanishes, read the new latest instead."""
    for _ in range(attempts):
        if (latest := latest_checkpoint(run_dir)) is None:
            return None
        try:
            return use(latest)
        except Exception:
            if latest.exists():
                raise
    raise JaxinterpError(
        f"{Path(run_dir) / CHECKPOINTS}: its latest checkpoint was replaced {attempts} times while being read; "
        "try again"
    )


def load_run_agent(run_dir: str | Path, checkpoint: str | Path | None = None) -> tuple[Agent, dict]:
    """The policy of a training run's ``checkpoint`` (an ``iter_NNNNNN`` directory, default the latest), and the
    run's metadata (config, seed, frames, iteration). A checkpoint kept outside the run (training deletes its
    older ones) is read with the run's config."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).exists():
        raise JaxinterpError(
            f"{run_dir} is not a training run (no {CONFIG_FILE}); train one with `jaxinterp train-agent`"
        )
    meta = json.loads((run_dir / CONFIG_FILE).read_text())
    arch = get_architecture(meta["ppo"]["arch"])
    if checkpoint is not None:
        if not (Path(checkpoint) / STATE_DIR).is_dir():
            raise JaxinterpError(
                f"{checkpoint} is not a training checkpoint (no {STATE_DIR}/); give an iter_NNNNNN directory "
                f"such as those in {run_dir / CHECKPOINTS}"
            )
        loaded = _restore_policy(Path(checkpoint) / STATE_DIR, arch)
    else:
        loaded = with_latest(run_dir, lambda latest: _restore_policy(latest / STATE_DIR, arch))
    if loaded is None:
        raise JaxinterpError(f"{run_dir} has no checkpoint yet; let `jaxinterp train-agent` run longer")
    params, num_actions = loaded["params"], loaded["params"][arch.logits]["bias"].shape[0]
    agent = Agent(arch, params, num_actions=num_actions)
    return agent, meta | {"frames": int(loaded["frames"]), "iteration": int(loaded["iteration"])}


def _restore_policy(path: Path, arch: Architecture) -> dict:
    """``params``, ``frames`` and ``iteration`` of a saved train state; the params' layout is ``arch``'s (the number
    of actions read from the saved logits), so a checkpoint of another network fails here rather than later."""
    import orbax.checkpoint as ocp

    path = path.absolute()
    with ocp.StandardCheckpointer() as ckpt:
        saved = ckpt.metadata(path).item_metadata
    num_actions = saved["params"][arch.logits]["bias"].shape[0]
    params = jax.eval_shape(lambda: init_params(arch, num_actions=num_actions))
    target = {"params": params, "frames": saved["frames"], "iteration": saved["iteration"]}
    as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
    with ocp.PyTreeCheckpointer() as ckpt:
        return ckpt.restore(
            path, args=ocp.args.PyTreeRestore(item=target, restore_args=as_numpy, partial_restore=True)
        )
