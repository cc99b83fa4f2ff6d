"""Training the default agent: PPO shaped like purejaxrl (``make_train(config)``), its resumable training loop
(`jaxinterp.rl.train.train`), evaluation on unseen levels (`jaxinterp.rl.evaluate.evaluate`) and export.

The functions ``train`` and ``evaluate`` are not re-exported here: their names are this package's modules."""

from jaxinterp.rl.evaluate import Evaluation
from jaxinterp.rl.ppo import PPOConfig, make_train

__all__ = ["Evaluation", "PPOConfig", "make_train"]
