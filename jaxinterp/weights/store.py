"""Load and save agents: torch ``.pt``/``.pth`` (read without torch, never executing the file), ``.safetensors``,
and orbax checkpoint directories. The format is chosen from the path: a suffix, or a directory for orbax.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import jax
import numpy as np

from jaxinterp.atomic import atomic_path, write_text
from jaxinterp.errors import JaxinterpError
from jaxinterp.models.agent import Agent
from jaxinterp.weights.convert import detect, flax_to_torch, torch_to_flax
from jaxinterp.weights.torch_pickle import read_torch_file, write_torch_file
from jaxinterp.weights.training_run import is_run_dir, load_run_agent

__all__ = [
    "DEFAULT_AGENT_NAME",
    "FORMATS",
    "agent_from_state_dict",
    "default_checkpoint",
    "load_agent",
    "read_state_dict",
    "save_agent",
    "weights_dir",
]

TORCH_SUFFIXES = (".pt", ".pth")
ORBAX_META = "jaxinterp.json"  # marks an orbax directory as one of ours and says which architecture it holds
FORMATS = "torch .pt/.pth, .safetensors, or an orbax checkpoint directory"


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """A torch-layout state dict from a ``.pt``/``.pth``/``.safetensors`` file or an orbax directory."""
    path = Path(path)
    if not path.exists():
        raise JaxinterpError(f"no such checkpoint: {path}")
    if path.is_dir():
        agent = _load_orbax(path)
        return flax_to_torch(agent.params, agent.arch, **agent.build_kwargs)
    if path.suffix in TORCH_SUFFIXES:
        return read_torch_file(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            return load_file(path)
        except (SafetensorError, OSError, ValueError) as e:
            raise JaxinterpError(
                f"{path} is not a readable .safetensors file ({e}); is it truncated?"
            ) from None
    raise JaxinterpError(f"unsupported checkpoint {path}: expected {FORMATS}")


def load_agent(path: str | Path) -> Agent:
    """An ``Agent`` from any supported file, or a ``train-agent`` run directory (its latest policy); the
    architecture and number of actions are read from the weights."""
    path = Path(path)
    if path.is_dir():
        return load_run_agent(path)[0] if is_run_dir(path) else _load_orbax(path)
    return agent_from_state_dict(read_state_dict(path))


def agent_from_state_dict(state_dict: Mapping[str, np.ndarray]) -> Agent:
    """An ``Agent`` from an in-memory torch-layout state dict (numpy arrays)."""
    arch, kwargs = detect(state_dict)
    return Agent(arch, torch_to_flax(state_dict, arch, **kwargs), **kwargs)


def save_agent(agent: Agent, path: str | Path) -> Path:
    """Write ``agent`` as ``.pt`` (torch layout), ``.safetensors``, or an orbax directory (a path without suffix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in TORCH_SUFFIXES + (".safetensors",):
        state_dict = flax_to_torch(agent.params, agent.arch, **agent.build_kwargs)
        if path.suffix == ".safetensors":
            from safetensors.numpy import save_file

            with atomic_path(path) as tmp:
                save_file(state_dict, tmp, metadata={"architecture": agent.arch.name})
        else:
            write_torch_file(path, state_dict)
        return path
    if path.suffix and not path.is_dir():
        raise JaxinterpError(
            f"unsupported output {path}: use a .pt, .pth or .safetensors file, or a directory "
            "without a suffix for orbax"
        )
    if path.exists() and any(path.iterdir()) and not (path / ORBAX_META).exists():
        raise JaxinterpError(f"{path} exists and is not a jaxinterp orbax checkpoint; choose a new directory")
    import orbax.checkpoint as ocp

    path = path.absolute()
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(path / "params", jax.tree.map(np.asarray, agent.params), force=True)
    meta = {"architecture": agent.arch.name, **agent.build_kwargs}
    write_text(path / ORBAX_META, json.dumps(meta, indent=2))
    return path


def _load_orbax(path: Path) -> Agent:
    meta_path = path / ORBAX_META
    if not meta_path.exists():
        raise JaxinterpError(f"{path} is a directory but not a jaxinterp orbax checkpoint (no {ORBAX_META})")
    import orbax.checkpoint as ocp

    meta = json.loads(meta_path.read_text())
    arch = meta.pop("architecture")
    with ocp.StandardCheckpointer() as ckpt:
        params = ckpt.restore(path.absolute() / "params")
    return Agent(arch, params, **meta)


DEFAULT_AGENT_NAME = "heist-impala"


def weights_dir() -> Path:
    """The shipped ``weights/`` folder (the repository's, beside the package); ``JAXINTERP_WEIGHTS`` overrides it."""
    import os

    return Path(os.environ.get("JAXINTERP_WEIGHTS", Path(__file__).resolve().parents[2] / "weights"))


def default_checkpoint() -> Path:
    """The shipped default agent, or a one-line error saying how to get one."""
    path = weights_dir() / f"{DEFAULT_AGENT_NAME}.pt"
    if not path.exists():
        raise JaxinterpError(
            f"no default agent at {path}: pass --checkpoint FILE (torch .pt/.pth, .safetensors, an orbax dir, or a "
            "train-agent run directory such as training/heist-impala), "
            "or train one with `jaxinterp train-agent --frames N --out DIR` and `jaxinterp export-agent DIR "
            f"weights/{DEFAULT_AGENT_NAME}`"
        )
    return path
