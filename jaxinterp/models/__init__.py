"""The agents' networks: the IMPALA-style architectures in Flax and ``Agent`` (params + pure forward functions)."""

from jaxinterp.models.agent import OBS_SHAPE, Agent, check_obs, parse_channels, preprocess
from jaxinterp.models.impala import Architecture, activation_shapes, get_architecture, init_params
from jaxinterp.models.receptive import ReceptiveField, receptive_field, receptive_fields

__all__ = [
    "OBS_SHAPE",
    "Agent",
    "Architecture",
    "ReceptiveField",
    "activation_shapes",
    "check_obs",
    "get_architecture",
    "init_params",
    "parse_channels",
    "preprocess",
    "receptive_field",
    "receptive_fields",
]
