"""Training the default agent: PPO shaped like purejaxrl (``make_train(config)``), its resumable training loop,
evaluation on unseen levels and export to the shipped weights."""

from jaxinterp.agent.evaluate import Evaluation, evaluate
from jaxinterp.agent.ppo import PPOConfig, make_train
from jaxinterp.agent.train import train

__all__ = ["Evaluation", "PPOConfig", "evaluate", "make_train", "train"]
