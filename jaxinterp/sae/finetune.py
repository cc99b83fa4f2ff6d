"""Fine-tuning a TopK SAE for the policy: its weights trained further on KL(clean policy || policy with the
reconstruction spliced into the layer), plus a small share of its reconstruction error (end-to-end SAEs, Braun et al.
2024, "Identifying functionally important features with end-to-end sparse dictionary learning").

A reconstruction-trained SAE spends its error evenly; the agent's decision is sensitive to a few directions, so a
small error there flips its argmax. Fine-tuning moves the error out of them. TopK keeps its sparsity by construction
(exactly k latents per position), which is why only TopK SAEs are fine-tuned: a ReLU or JumpReLU SAE would need a
sparsity term, and its L0 would drift. Measured on the last stage (`benchmarks/RESULTS.md`), TopK k8 SAEs went from
88.5% to 96.0% held-out action agreement on the first default agent (FVU 0.044 -> 0.052), and from 79.7% to 92.7%
on the second (FVU 0.020 -> 0.031).
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
from jaxinterp.sae import model
from jaxinterp.sae.config import SAEConfig
from jaxinterp.sae.data import ActivationSource, evenly
from jaxinterp.sae.files import SAE
from jaxinterp.sae.train import since_fired

__all__ = ["AUX_COEF", "FINETUNE_FRAMES", "FINETUNE_LR", "FINETUNE_STEPS", "MSE_COEF", "finetune_for_policy"]

FINETUNE_STEPS = 16000
"""Steps of `FINETUNE_FRAMES` frames. On the last stage (TopK k8, 256 latents, the 65,536-frame recording of
`benchmarks/RESULTS.md`) held-out action agreement went 88.5% -> 94.6% after 8000 steps -> 96.0% after 16000
(3.2 minutes on the 2-core CPU); on a 32,768-frame recording 87.1% -> 92.1% (2000) -> 95.5% (8000)."""

FINETUNE_LR = 3e-4
"""Adam's learning rate: 1e-4 stalled at ~90% agreement over 1500 steps; 3e-4 kept climbing."""

MSE_COEF = 0.05
"""Weight of the reconstruction error (squared error over the layer's variance, i.e. FVU) beside the KL: at 1.0 the
error term dominated (agreement ~90% on the 32,768-frame recording); at 0.05 the FVU rose 0.050 -> 0.060 there
while agreement reached 95.5%. On the second default agent's last stage (65,536 frames) 0.002, 0.01 and 0.05 gave
93.4%, 91.3% and 92.7% (FVU 0.073, 0.048, 0.031): within the run-to-run spread, so the FVU is kept low."""

AUX_COEF = SAEConfig.aux_coef
"""Weight of AuxK (dead latents reconstructing the residual, `model.auxk`), as in training. Without it latents die:
on the second default agent's last stage (TopK k8, 16,000 steps) 13.3% never fired on held-out positions; with it
9.8%, at the same FVU (0.031) and agreement (93.0% / 92.7%)."""

DEAD_SAMPLES = SAEConfig.dead_samples
"""A latent that has not fired on this many positions is dead, as in training."""

FINETUNE_FRAMES = 64
"""Frames (each all of its positions) per step: the KL is a property of a whole frame's reconstruction."""


@functools.partial(jax.jit, static_argnames=("layer", "k", "optimizer"))
def _step(agent: Agent, params, opt_state, since, x, variance, coefs, *, layer: str, k: int, optimizer):
    """One Adam step on frames' activations ``x`` (N, H, W, C): (params, opt_state, since, (kl, fvu, aux)).

    ``since`` (d_sae,) counts the positions since each latent last fired; those past ``coefs["dead_samples"]``
    are dead and AuxK trains them on the residual, as in `model.loss`."""
    logits = agent.arch.logits
    lp = jax.nn.log_softmax(agent.forward_from(agent.params, layer, x)[logits])
    flat = x.reshape(-1, x.shape[-1])
    dead = since >= coefs["dead_samples"]

    def loss(p):
        pre = model.pre_activations(p, flat)
        z = model.top_k_mask(pre, k)
        err = flat - model.decode(p, z)
        lq = jax.nn.log_softmax(agent.forward_from(agent.params, layer, x - err.reshape(x.shape))[logits])
        kl = jnp.mean(policy_kl(lp, lq))
        fvu = jnp.mean(jnp.sum(err**2, -1)) / variance
        aux = model.auxk(p, pre, err, dead, coefs["k_aux"])
        return kl + coefs["mse"] * fvu + coefs["aux"] * aux, (z, (kl, fvu, aux))

    (_, (z, terms)), grads = jax.value_and_grad(loss, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, since_fired(since, z), terms


def finetune_for_policy(
    agent: Agent,
    sae: SAE,
    source: ActivationSource,
    *,
    steps: int = FINETUNE_STEPS,
    lr: float = FINETUNE_LR,
    mse_coef: float = MSE_COEF,
    aux_coef: float = AUX_COEF,
    dead_samples: int = DEAD_SAMPLES,
    seed: int = 0,
    progress: bool = True,
) -> SAE:
    """``sae`` (TopK, on ``source``'s layer) trained `steps` more steps on the KL between the clean policy and the
    policy with its reconstruction spliced in, plus ``mse_coef`` x its FVU and ``aux_coef`` x AuxK over the latents
    that have not fired on ``dead_samples`` positions, on ``source``'s training frames (drawn with ``seed``);
    held-out frames are never read. Returns the new SAE (same architecture, k and layer)."""
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
    since = jnp.zeros(len(params.b_enc), jnp.int32)
    k_aux = SAEConfig(d_in=source.d_in, width=len(params.b_enc)).k_aux  # as training derives it
    coefs = {"mse": mse_coef, "aux": aux_coef, "dead_samples": dead_samples, "k_aux": k_aux}
    rng = np.random.default_rng(seed)
    options = {"layer": sae.layer, "k": sae.k, "optimizer": optimizer}
    with progress_bar(steps, desc="fine-tune for the policy", unit="step", enabled=progress) as bar:
        for i in range(steps):
            x = np.asarray(source.acts[np.sort(rng.choice(frames, FINETUNE_FRAMES))], np.float32)
            params, opt_state, since, (kl, fvu, aux) = _step(
                agent, params, opt_state, since, x, variance, coefs, **options
            )
            if not np.isfinite(float(kl)):
                raise JaxinterpError(f"policy fine-tuning diverged at step {i} (KL {float(kl)}); lower --lr")
            bar.update(1)
            if i % 50 == 0:
                dead = float(jnp.mean(since >= dead_samples))
                bar.set_postfix(
                    kl=f"{float(kl):.5f}",
                    fvu=f"{float(fvu):.4f}",
                    aux=f"{float(aux):.3f}",
                    dead=f"{dead:.0%}",
                )
    params = jax.tree.map(lambda a: np.asarray(a, np.float32), params)
    tuned = {
        "steps": steps,
        "lr": lr,
        "mse_coef": mse_coef,
        "aux_coef": aux_coef,
        "dead_samples": dead_samples,
        "seed": seed,
    }
    cfg = {**sae.cfg, "jaxinterp": {**sae.cfg.get("jaxinterp", {}), "finetuned_for_policy": tuned}}
    return sae._replace(params=params, cfg=cfg)
