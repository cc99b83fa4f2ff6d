"""SAE latents as the features the rest of jaxinterp reads: a `Feature` for dataset examples, spatial mosaics and
object responses, and an `Objective` family for feature visualization of every latent in one call."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.errors import JaxinterpError
from jaxinterp.examples.features import Feature
from jaxinterp.featviz.objectives import Objective, direction, direction_neuron
from jaxinterp.sae import model
from jaxinterp.sae.files import SAE

__all__ = ["latent_feature", "latent_objective"]


@dataclasses.dataclass(frozen=True, eq=False)
class _Encode:
    """``acts (N, H, W, C) -> latents (N, H, W, d_sae)``; hashed by identity, so jitted scans built on it reuse
    their compile for this SAE."""

    sae: SAE
    latents: tuple[int, ...] | None

    def __call__(self, acts: jax.Array) -> jax.Array:
        s = self.sae
        z = model.encode(s.arch, jax.tree.map(jnp.asarray, s.params), acts, jnp.int32(s.k))
        return z if self.latents is None else z[..., np.asarray(self.latents)]


def latent_feature(sae: SAE, latents: Sequence[int] | None = None) -> Feature:
    """The latents of ``sae`` (all if None) as a feature of its layer: ``jaxinterp.examples`` finds their top
    patches, mosaics and object responses exactly as for channels."""
    if latents is not None:
        latents = tuple(int(i) for i in latents)
        bad = [i for i in latents if not 0 <= i < sae.d_sae]
        if bad:
            raise JaxinterpError(f"latent {bad[0]} is out of range: the SAE has latents 0-{sae.d_sae - 1}")
    return Feature(
        sae.layer, _Encode(sae, latents), f"{sae.layer} SAE latents ({sae.arch}, {sae.d_sae})", latents
    )


def latent_objective(sae: SAE, where: str = "centre") -> Objective:
    """A family over the latents (the traced index picks one) for feature visualization: the latent's encoder
    pre-activation ``acts @ W_enc[:, j]`` at the centre position (``"centre"``) or averaged over positions
    (``"mean"``). The constant ``b_enc - b_dec @ W_enc`` does not move the gradient, so it is left out."""
    vectors = np.asarray(sae.params.W_enc, np.float32).T  # (d_sae, d_in)
    if where == "centre":
        return direction_neuron(sae.layer, vectors)
    if where == "mean":
        return direction(sae.layer, vectors, name="latent")
    raise JaxinterpError(f"where must be 'centre' or 'mean', got {where!r}")
