"""Torch state dicts <-> Flax params for the supported architectures, with detection from keys and shapes.

Flax parameters are named by the torch module path, so a tensor maps to a tensor: conv weights OIHW <-> HWIO,
dense weights (out, in) <-> (in, out), and the dense layer after the flatten also reorders its inputs from torch's
CHW flatten to our HWC flatten.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.errors import JaxinterpError
from jaxinterp.models.impala import ARCHITECTURES, Architecture, activation_shapes, init_params

_KNOWN = "; ".join(f"{a.name}: {a.description}" for a in ARCHITECTURES.values())


def detect(state_dict: Mapping[str, np.ndarray]) -> tuple[Architecture, dict]:
    """The architecture of a torch state dict and its build arguments (actions, channel widths).

    Anything that is not exactly one of the known layouts is refused with a message naming them.
    """
    matches = [a for a in ARCHITECTURES.values() if a.signature in state_dict]
    if len(matches) != 1:
        sample = ", ".join(list(state_dict)[:6]) or "no tensors"
        raise JaxinterpError(f"unrecognised checkpoint layout (keys: {sample}, ...); known layouts: {_KNOWN}")
    arch = matches[0]
    kwargs = {"num_actions": int(_shape(state_dict, f"{arch.logits}.weight", arch)[0])}
    if arch.name != "interpretable-cnn":
        stage = (
            r"conv_seqs\.(\d+)\.conv\.weight"
            if arch.name == "impala"
            else r"embedder\.block(\d+)\.conv\.weight"
        )
        widths = sorted(
            (int(m[1]), v.shape[0]) for k, v in state_dict.items() if (m := re.fullmatch(stage, k))
        )
        kwargs["channels"] = tuple(int(w) for _, w in widths)
    expected = torch_shapes(arch, **kwargs)
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = [
        f"{k} {tuple(state_dict[k].shape)} != {v}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != v
    ]
    if missing or unexpected or wrong:
        problems = (
            (["missing " + ", ".join(missing[:5])] if missing else [])
            + (["unexpected " + ", ".join(unexpected[:5])] if unexpected else [])
            + wrong[:5]
        )
        raise JaxinterpError(
            f"checkpoint looks like {arch.name!r} but does not match it ({'; '.join(problems)}); "
            f"known layouts: {_KNOWN}"
        )
    return arch, kwargs


def _shape(state_dict, key, arch):
    if key not in state_dict:
        raise JaxinterpError(
            f"checkpoint looks like {arch.name!r} but has no {key!r}; known layouts: {_KNOWN}"
        )
    return state_dict[key].shape


def _flatten_input_shape(arch: Architecture, **kwargs) -> tuple[int, int, int]:
    """(H, W, C) of the activation that the first dense layer flattens."""
    return [s for s in activation_shapes(arch.build(**kwargs)).values() if len(s) == 3][-1]


def torch_shapes(arch: Architecture, **kwargs) -> dict[str, tuple[int, ...]]:
    """The torch state-dict keys and shapes of ``arch`` built with ``kwargs``."""
    params = jax.eval_shape(lambda: init_params(arch, **kwargs))
    out = {}
    for module, p in params.items():
        k = p["kernel"].shape
        out[f"{module}.weight"] = (k[3], k[2], k[0], k[1]) if len(k) == 4 else (k[1], k[0])
        out[f"{module}.bias"] = p["bias"].shape
    return out


def torch_to_flax(state_dict: Mapping[str, np.ndarray], arch: Architecture, **kwargs) -> dict:
    """Flax params from a torch state dict already checked by ``detect``."""
    h, w, c = _flatten_input_shape(arch, **kwargs)
    params = {}
    for module in {k.rsplit(".", 1)[0] for k in state_dict}:
        weight = np.asarray(state_dict[f"{module}.weight"], np.float32)
        if weight.ndim == 4:
            kernel = weight.transpose(2, 3, 1, 0)
        elif module == arch.flatten_dense:
            kernel = weight.reshape(-1, c, h, w).transpose(0, 2, 3, 1).reshape(weight.shape[0], -1).T
        else:
            kernel = weight.T
        params[module] = {
            "kernel": jnp.asarray(kernel),
            "bias": jnp.asarray(state_dict[f"{module}.bias"], jnp.float32),
        }
    return params


def flax_to_torch(params: Mapping, arch: Architecture, **kwargs) -> dict[str, np.ndarray]:
    """A torch-layout state dict (numpy arrays) from Flax params; the inverse of ``torch_to_flax``."""
    h, w, c = _flatten_input_shape(arch, **kwargs)
    out = {}
    for module in torch_order(arch, **kwargs):
        kernel = np.asarray(params[module]["kernel"], np.float32)
        if kernel.ndim == 4:
            weight = kernel.transpose(3, 2, 0, 1)
        elif module == arch.flatten_dense:
            weight = kernel.T.reshape(-1, h, w, c).transpose(0, 3, 1, 2).reshape(kernel.shape[1], -1)
        else:
            weight = kernel.T
        out[f"{module}.weight"] = np.ascontiguousarray(weight)
        out[f"{module}.bias"] = np.asarray(params[module]["bias"], np.float32)
    return out


def torch_order(arch: Architecture, **kwargs) -> list[str]:
    """Module paths in forward order (the order torch lists them in a state dict)."""
    return list(dict.fromkeys(k.rsplit(".", 1)[0] for k in torch_shapes(arch, **kwargs)))


__all__ = ["detect", "flax_to_torch", "torch_order", "torch_shapes", "torch_to_flax"]
