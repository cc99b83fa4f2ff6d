"""jaxinterp: interpretability for Procgen reinforcement-learning agents, in JAX.

The one-liners (``visualize``, ``dataset_examples``, ``attribute``, ``intervene``) and loading an ``Agent`` are
here; each package exposes its parts. Data flows one way, and nothing imports upward::

    models/         the Flax networks (IMPALA variants), the Agent, receptive fields, CPU-fast conv and max-pool
    weights/        safe torch .pt reading, safetensors and orbax, torch <-> Flax layouts, training runs' policies
    envs/           vectorized procgen Heist, stepping it with a policy, rollouts, datasets, streams, object maps
    featviz/        feature visualization: parameterizations, transforms, objectives, the jitted engine
    examples/       dataset examples, spatial mosaics, NMF directions, object response, attribution
    sae/            sparse autoencoders: architectures, sweeps in one jitted step, metrics, SAELens files
    interventions/  edits inside the forward, batched play on the same levels, comparisons with clean
    rl/             PPO training, evaluation against the random policy, export with a model card
    report/         pictures and pages: sheets, overlays, intervention figures, the HTML report
    api             the one-liners
    cli/            the ``jaxinterp`` command, a module per command group

The names below load on first use, so that ``import jaxinterp`` (and ``jaxinterp --help``) does not start JAX.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version
from typing import TYPE_CHECKING

try:
    __version__ = _version("jaxinterp")
except PackageNotFoundError:  # a source tree on PYTHONPATH, not installed (as on a lent GPU machine)
    __version__ = "unknown"

__all__ = [
    "Agent",
    "JaxinterpError",
    "agent_from_state_dict",
    "attribute",
    "dataset_examples",
    "intervene",
    "load_agent",
    "save_agent",
    "visualize",
]

_HOMES = {
    "Agent": "jaxinterp.models.agent",
    "JaxinterpError": "jaxinterp.errors",
    "agent_from_state_dict": "jaxinterp.weights.store",
    "attribute": "jaxinterp.api",
    "dataset_examples": "jaxinterp.api",
    "intervene": "jaxinterp.api",
    "load_agent": "jaxinterp.weights.store",
    "save_agent": "jaxinterp.weights.store",
    "visualize": "jaxinterp.api",
}

if TYPE_CHECKING:
    from jaxinterp.api import attribute, dataset_examples, intervene, visualize
    from jaxinterp.errors import JaxinterpError
    from jaxinterp.models.agent import Agent
    from jaxinterp.weights.store import agent_from_state_dict, load_agent, save_agent


_PACKAGES = (
    "models",
    "weights",
    "envs",
    "featviz",
    "examples",
    "sae",
    "interventions",
    "rl",
    "report",
    "api",
    "cli",
)


def __getattr__(name: str):
    if name in _PACKAGES:  # ``jaxinterp.featviz`` etc. without importing them first, as before
        return importlib.import_module(f"jaxinterp.{name}")
    if name not in _HOMES:
        raise AttributeError(f"module 'jaxinterp' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
