"""Weights in and out: a safe reader and writer of torch's .pt files, name/layout maps both ways, and the store
(orbax, safetensors, the shipped default agent)."""

from jaxinterp.weights.convert import flax_to_torch, torch_to_flax
from jaxinterp.weights.store import agent_from_state_dict, default_checkpoint, load_agent, save_agent
from jaxinterp.weights.torch_pickle import read_torch_file, write_torch_file

__all__ = [
    "agent_from_state_dict",
    "default_checkpoint",
    "flax_to_torch",
    "load_agent",
    "read_torch_file",
    "save_agent",
    "torch_to_flax",
    "write_torch_file",
]
