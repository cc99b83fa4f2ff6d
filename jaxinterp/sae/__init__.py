"""Sparse autoencoders on an agent's activations: sweeps trained in one jitted, vmapped step, SAELens' file layout,
and metrics that include the agent's policy and the game's ground-truth objects.

    from jaxinterp.sae import SAEConfig, train_saes, load_sae
    dirs = train_saes(agent, dataset, "conv_seqs.2.res_block1", [SAEConfig(d_in=32, k=8)], "sae/")
    sae = load_sae(dirs[0]); z = sae.encode(acts)  # acts (..., 32), as a torch forward hook returns them
"""

from jaxinterp.sae.config import ARCHITECTURES, SAEConfig, parse_sweep
from jaxinterp.sae.data import ActivationSource
from jaxinterp.sae.files import SAE, load_sae, save_sae
from jaxinterp.sae.finetune import finetune_for_policy
from jaxinterp.sae.metrics import object_scores, policy_fidelity, reconstruction
from jaxinterp.sae.model import SAEParams
from jaxinterp.sae.runs import evaluate_saes, train_saes
from jaxinterp.sae.train import SweepResult, make_train, train_sweep

__all__ = [
    "ARCHITECTURES",
    "SAE",
    "ActivationSource",
    "SAEConfig",
    "SAEParams",
    "SweepResult",
    "evaluate_saes",
    "finetune_for_policy",
    "load_sae",
    "make_train",
    "object_scores",
    "parse_sweep",
    "policy_fidelity",
    "reconstruction",
    "save_sae",
    "train_saes",
    "train_sweep",
]
