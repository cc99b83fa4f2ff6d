"""The agents' networks: the IMPALA-style architectures in Flax and ``Agent`` (params + pure forward functions)."""

from jaxinterp.models.agent import OBS_SHAPE, Agent, check_obs, parse_channels, preprocess
from jaxinterp.models.impala import Architecture, activation_shapes, get_architecture

__all__ = [
    "OBS_SHAPE",
    "Agent",
    "Architecture",
    "activation_shapes",
    "check_obs",
    "get_architecture",
    "parse_channels",
    "preprocess",
]
