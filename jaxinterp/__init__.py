"""jaxinterp: interpretability for Procgen reinforcement-learning agents, in JAX."""

from importlib.metadata import version as _version

from jaxinterp.api import attribute, dataset_examples, intervene, visualize
from jaxinterp.errors import JaxinterpError
from jaxinterp.models.agent import Agent
from jaxinterp.weights.store import agent_from_state_dict, load_agent, save_agent

__version__ = _version("jaxinterp")

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
