"""Heist: vectorized procgen environments, rollouts with a policy, on-disk datasets and ground-truth object maps."""

from jaxinterp.envs.dataset import Dataset, DatasetWriter
from jaxinterp.envs.ground_truth import OBJECT_CLASSES, object_map, object_maps
from jaxinterp.envs.heist import MOVE_OF_ACTION, NUM_ACTIONS, HeistConfig, HeistEnv
from jaxinterp.envs.rollout import agent_policy, collect, random_policy

__all__ = [
    "MOVE_OF_ACTION",
    "NUM_ACTIONS",
    "OBJECT_CLASSES",
    "Dataset",
    "DatasetWriter",
    "HeistConfig",
    "HeistEnv",
    "agent_policy",
    "collect",
    "object_map",
    "object_maps",
    "random_policy",
]
