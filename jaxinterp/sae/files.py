"""SAEs in SAELens' on-disk layout, both ways: ``sae_weights.safetensors``, ``cfg.json``, ``sparsity.safetensors``.

Exported weights work on the raw activations a torch forward hook returns (NCHW, read per position): the input
scale used in training is folded into the weights (``normalize_activations: "none"``), and a BatchTopK SAE is
written as a JumpReLU with its learned global threshold in every entry, as SAELens does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from jaxinterp.errors import JaxinterpError
from jaxinterp.sae import model
from jaxinterp.sae.config import SAEConfig
from jaxinterp.sae.model import SAEParams

__all__ = [
    "CFG_FILE",
    "FROM_SAELENS",
    "SAE",
    "SPARSITY_FILE",
    "TO_SAELENS",
    "WEIGHTS_FILE",
    "fold_scale",
    "from_training",
    "load_sae",
    "load_sparsity",
    "save_sae",
]

WEIGHTS_FILE = "sae_weights.safetensors"
CFG_FILE = "cfg.json"
SPARSITY_FILE = "sparsity.safetensors"
# Our architecture -> SAELens' inference architecture name, and back.
TO_SAELENS = {
    "relu": "standard",
    "topk": "topk",
    "batchtopk": "jumprelu",
    "matryoshka": "jumprelu",
    "jumprelu": "jumprelu",
}
FROM_SAELENS = {"standard": "relu", "topk": "topk", "jumprelu": "jumprelu"}


class SAE(NamedTuple):
    """A trained SAE on raw activations of ``layer``: ``sae.encode(acts)`` / ``sae.decode(z)`` / ``sae(acts)``.

    ``arch`` is the inference architecture (relu, topk or jumprelu); activations may be (..., d_in) or NHWC."""

    arch: str
    k: int
    params: SAEParams
    layer: str
    cfg: dict

    @property
    def d_in(self) -> int:
        return int(self.params.W_enc.shape[0])

    @property
    def d_sae(self) -> int:
        return int(self.params.W_enc.shape[1])

    def encode(self, acts: jax.Array) -> jax.Array:
        return model.encode(self.arch, self.params, jnp.asarray(acts), jnp.int32(self.k))

    def decode(self, z: jax.Array) -> jax.Array:
        return model.decode(self.params, z)

    def __call__(self, acts: jax.Array) -> jax.Array:
        return self.decode(self.encode(acts))


def fold_scale(params: SAEParams, scale: float) -> SAEParams:
    """Weights trained on ``acts * scale`` as weights on ``acts``: pre-activations, and so latents and
    thresholds, are unchanged; the reconstruction is divided by ``scale``."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float32), params)
    return SAEParams(p.W_enc * scale, p.b_enc, p.W_dec / scale, p.b_dec / scale, p.threshold)


def from_training(config: SAEConfig, params: SAEParams, scale: float, *, layer: str, model_name: str) -> SAE:
    """The inference SAE of a trained member, on raw activations."""
    arch = FROM_SAELENS[TO_SAELENS[config.arch]]
    cfg = {
        "architecture": TO_SAELENS[config.arch],
        "d_in": config.d_in,
        "d_sae": config.width,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "metadata": {"model_name": model_name, "hook_name": layer},
        "jaxinterp": {"config": config.to_dict(), "input_scale": scale},
    }
    if arch == "topk":
        cfg["k"] = config.k
    return SAE(arch, config.k, fold_scale(params, scale), layer, cfg)


def save_sae(sae: SAE, out_dir: str | os.PathLike, *, log10_frequency: np.ndarray | None = None) -> Path:
    """Write ``out_dir`` in SAELens' layout (the threshold only for JumpReLU)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {
        name: np.ascontiguousarray(getattr(sae.params, name), np.float32) for name in SAEParams._fields
    }
    if sae.arch != "jumprelu":
        del tensors["threshold"]
    save_file(tensors, str(out / WEIGHTS_FILE))
    (out / CFG_FILE).write_text(json.dumps(sae.cfg, indent=2))
    if log10_frequency is not None:
        save_file({"sparsity": np.asarray(log10_frequency, np.float32)}, str(out / SPARSITY_FILE))
    return out


def load_sae(path: str | os.PathLike, *, d_in: int | None = None) -> SAE:
    """An SAE from a directory in SAELens' layout (written here or by SAELens); ``d_in`` checks the layer's width."""
    path = Path(path)
    if not (path / CFG_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
        raise JaxinterpError(f"{path} is not an SAE directory: it needs {CFG_FILE} and {WEIGHTS_FILE}")
    try:
        cfg = json.loads((path / CFG_FILE).read_text())
        tensors = load_file(str(path / WEIGHTS_FILE))
    except (ValueError, OSError, SafetensorError) as e:
        raise JaxinterpError(f"cannot read the SAE in {path}: {e}") from None
    architecture = cfg.get("architecture", "standard")
    if architecture not in FROM_SAELENS:
        raise JaxinterpError(
            f"{path}: SAE architecture {architecture!r} is not supported; jaxinterp reads {', '.join(FROM_SAELENS)}"
        )
    if cfg.get("normalize_activations", "none") not in ("none", None):
        raise JaxinterpError(
            f"{path}: normalize_activations={cfg['normalize_activations']!r}; jaxinterp reads SAEs on raw "
            "activations (fold the normalization into the weights first)"
        )
    missing = [n for n in ("W_enc", "b_enc", "W_dec", "b_dec") if n not in tensors]
    if missing:
        raise JaxinterpError(f"{path}/{WEIGHTS_FILE} lacks {', '.join(missing)}")
    w_enc = np.asarray(tensors["W_enc"], np.float32)
    n_in, n_sae = w_enc.shape
    expected = {"b_enc": (n_sae,), "W_dec": (n_sae, n_in), "b_dec": (n_in,)}
    for name, shape in expected.items():
        if tensors[name].shape != shape:
            raise JaxinterpError(
                f"{path}: {name} has shape {tensors[name].shape}, expected {shape} for W_enc {w_enc.shape}"
            )
    if (cfg.get("d_in"), cfg.get("d_sae")) != (n_in, n_sae):
        raise JaxinterpError(
            f"{path}: cfg.json says d_in={cfg.get('d_in')}, d_sae={cfg.get('d_sae')}; weights are {n_in}x{n_sae}"
        )
    if d_in is not None and n_in != d_in:
        raise JaxinterpError(f"{path}: the SAE reads d_in={n_in} channels but the layer has {d_in}")
    arch = FROM_SAELENS[architecture]
    if arch == "jumprelu" and "threshold" not in tensors:
        raise JaxinterpError(f"{path}: a JumpReLU SAE needs a threshold tensor in {WEIGHTS_FILE}")
    threshold = np.asarray(tensors.get("threshold", np.zeros(n_sae)), np.float32)
    params = SAEParams(
        w_enc,
        np.asarray(tensors["b_enc"], np.float32),
        np.asarray(tensors["W_dec"], np.float32),
        np.asarray(tensors["b_dec"], np.float32),
        threshold,
    )
    if not cfg.get("apply_b_dec_to_input", True):  # fold "no b_dec on the input" into b_enc
        params = params._replace(b_enc=params.b_enc + params.b_dec @ params.W_enc)
    k = int(cfg.get("k") or 0)
    if arch == "topk" and not 1 <= k <= n_sae:
        raise JaxinterpError(f"{path}: a TopK SAE needs k in [1, {n_sae}] in cfg.json, got {cfg.get('k')!r}")
    layer = (cfg.get("metadata") or {}).get("hook_name") or cfg.get("hook_name") or ""
    return SAE(arch, max(k, 1), params, layer, cfg)


def load_sparsity(path: str | os.PathLike) -> np.ndarray | None:
    f = Path(path) / SPARSITY_FILE
    return load_file(str(f))["sparsity"] if f.is_file() else None
