"""Heist: vectorized procgen environments, stepping them with a policy, rollouts into on-disk datasets, ground-truth
object maps."""

from jaxinterp.envs.dataset import Dataset, DatasetWriter
from jaxinterp.envs.ground_truth import OBJECT_CLASSES, object_map, object_maps
from jaxinterp.envs.heist import MOVE_OF_ACTION, NUM_ACTIONS, HeistConfig, HeistEnv
from jaxinterp.envs.rollout import agent_policy, collect, random_policy
from jaxinterp.envs.stepping import Step, keyed, step_policy

__all__ = [
    "MOVE_OF_ACTION",
    "NUM_ACTIONS",
    "OBJECT_CLASSES",
    "Dataset",
    "DatasetWriter",
    "HeistConfig",
    "HeistEnv",
    "Step",
    "agent_policy",
    "collect",
    "keyed",
    "object_map",
    "object_maps",
    "random_policy",
    "step_policy",
]
