"""Fine-tuning a TopK SAE for the policy: its weights trained further on KL(clean policy || policy with the
reconstruction spliced into the layer), plus a small share of its reconstruction error (end-to-end SAEs, Braun et al.
2024, "Identifying functionally important features with end-to-end sparse dictionary learning").

A reconstruction-trained SAE spends its error evenly; the agent's decision is sensitive to a few directions, so a
small error there flips its argmax. Fine-tuning moves the error out of them. TopK keeps its sparsity by construction
(exactly k latents per position), which is why only TopK SAEs are fine-tuned: a ReLU or JumpReLU SAE would need a
sparsity term, and its L0 would drift. Measured on the shipped agent's last stage (`benchmarks/RESULTS.md`): a TopK
k8 SAE from 88.5% to 96.0% held-out action agreement, FVU 0.044 -> 0.052.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxinterp.errors import JaxinterpError
from jaxinterp.models.agent import Agent, policy_kl
from jaxinterp.progress import bar as progress_bar
from jaxinterp.sae.data import ActivationSource, evenly
from jaxinterp.sae.files import SAE
from jaxinterp.sae.metrics import splice

__all__ = ["FINETUNE_FRAMES", "FINETUNE_LR", "FINETUNE_STEPS", "MSE_COEF", "finetune_for_policy"]

FINETUNE_STEPS = 16000
"""Steps of `FINETUNE_FRAMES` frames. On the last stage (TopK k8, 256 latents, the 65,536-frame recording of
`benchmarks/RESULTS.md`) held-out action agreement went 88.5% -> 94.6% after 8000 steps -> 96.0% after 16000
(3.2 minutes on the 2-core CPU); on a 32,768-frame recording 87.1% -> 92.1% (2000) -> 95.5% (8000)."""

FINETUNE_LR = 3e-4
"""Adam's learning rate: 1e-4 stalled at ~90% agreement over 1500 steps; 3e-4 kept climbing."""

MSE_COEF = 0.05
"""Weight of the reconstruction error (squared error over the layer's variance, i.e. FVU) beside the KL: at 1.0 the
error term dominated (agreement ~90% on the 32,768-frame recording); at 0.05 the FVU rose 0.050 -> 0.060 there
while agreement reached 95.5%."""

FINETUNE_FRAMES = 64
"""Frames (each all of its positions) per step: the KL is a property of a whole frame's reconstruction."""


@functools.partial(jax.jit, static_argnames=("layer", "k", "optimizer"))
def _step(agent: Agent, params, opt_state, x, variance, mse_coef, *, layer: str, k: int, optimizer):
    """One Adam step on frames' activations ``x`` (N, H, W, C): (params, opt_state, (kl, fvu))."""
    logits = agent.arch.logits
    lp = jax.nn.log_softmax(agent.forward_from(agent.params, layer, x)[logits])

    def loss(p):
        r = splice(SAE("topk", k, p, layer, {}), x)
        lq = jax.nn.log_softmax(agent.forward_from(agent.params, layer, r)[logits])
        kl = jnp.mean(policy_kl(lp, lq))
        fvu = jnp.mean(jnp.sum((r - x) ** 2, -1)) / variance
        return kl + mse_coef * fvu, (kl, fvu)

    (_, aux), grads = jax.value_and_grad(loss, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, aux


def finetune_for_policy(
    agent: Agent,
    sae: SAE,
    source: ActivationSource,
    *,
    steps: int = FINETUNE_STEPS,
    lr: float = FINETUNE_LR,
    mse_coef: float = MSE_COEF,
    seed: int = 0,
    progress: bool = True,
) -> SAE:
    """``sae`` (TopK, on ``source``'s layer) trained `steps` more steps on the KL between the clean policy and the
    policy with its reconstruction spliced in, plus ``mse_coef`` x its FVU, on ``source``'s training frames (drawn
    with ``seed``); held-out frames are never read. Returns the new SAE (same architecture, k and layer)."""
    if sae.arch != "topk":
        raise JaxinterpError(
            f"policy fine-tuning keeps sparsity only for TopK SAEs (exactly k latents); this SAE is {sae.arch!r}"
        )
    if sae.layer != source.layer:
        raise JaxinterpError(f"the SAE reads {sae.layer} but the activations are of {source.layer}")
    if steps < 1:
        raise JaxinterpError(f"--steps must be >= 1, got {steps}")
    frames = source.train_frames
    sample = np.asarray(source.acts[evenly(frames, 1024)], np.float64).reshape(-1, source.d_in)
    variance = float(((sample - sample.mean(0)) ** 2).sum(-1).mean())  # per position, as FVU pools it
    optimizer = optax.adam(lr)
    params = jax.tree.map(jnp.asarray, sae.params)
    opt_state = optimizer.init(params)
    rng = np.random.default_rng(seed)
    options = {"layer": sae.layer, "k": sae.k, "optimizer": optimizer}
    with progress_bar(steps, desc="fine-tune for the policy", unit="step", enabled=progress) as bar:
        for i in range(steps):
            x = np.asarray(source.acts[np.sort(rng.choice(frames, FINETUNE_FRAMES))], np.float32)
            params, opt_state, (kl, fvu) = _step(agent, params, opt_state, x, variance, mse_coef, **options)
            if not np.isfinite(float(kl)):
                raise JaxinterpError(f"policy fine-tuning diverged at step {i} (KL {float(kl)}); lower --lr")
            bar.update(1)
            if i % 50 == 0:
                bar.set_postfix(kl=f"{float(kl):.5f}", fvu=f"{float(fvu):.4f}")
    params = jax.tree.map(lambda a: np.asarray(a, np.float32), params)
    tuned = {"steps": steps, "lr": lr, "mse_coef": mse_coef, "seed": seed}
    cfg = {**sae.cfg, "jaxinterp": {**sae.cfg.get("jaxinterp", {}), "finetuned_for_policy": tuned}}
    return sae._replace(params=params, cfg=cfg)
