"""Convolution and pooling building blocks, written for speed on CPU, and the Flax modules that use them.

Two choices here decide the speed of everything built on the models (measured, see ../shared/CPU-PERFORMANCE.md):
- ``conv2d`` is a ``jax.custom_vjp`` whose backward passes are themselves standard-layout convolutions. Inside
  ``lax.scan`` XLA:CPU otherwise keeps backward convolutions in a non-standard kernel layout that runs as generated
  loops (6-22x slower); gradients are identical to the plain convolution's.
- ``max_pool`` is the max of 9 strided slices of a -inf padded input: the backward of ``lax.reduce_window``
  (select_and_scatter) cost as much as all the convolutions' weight gradients.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

_NHWC = ("NHWC", "HWIO", "NHWC")


def _conv(x: jax.Array, w: jax.Array, padding: int) -> jax.Array:
    """Plain stride-1 NHWC convolution with symmetric zero padding (the reference for ``conv2d``)."""
    return lax.conv_general_dilated(x, w, (1, 1), [(padding, padding)] * 2, dimension_numbers=_NHWC)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv2d(x: jax.Array, w: jax.Array, padding: int) -> jax.Array:
    """Stride-1 NHWC convolution (kernel HWIO, symmetric zero padding) with a scan-friendly backward pass."""
    return _conv(x, w, padding)


def _conv2d_fwd(x, w, padding):
    return _conv(x, w, padding), (x, w)


def _conv2d_bwd(padding, residuals, g):
    x, w = residuals
    kh = w.shape[0]
    # Input gradient: a "full" convolution of g with the kernel flipped spatially and in/out channels swapped.
    w_flip = jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2)
    dx = _conv(g, w_flip, kh - 1 - padding)
    # Weight gradient: correlate the padded input with g, contracting over the batch: the batch axis plays the
    # role of input features (x as (C_in, H, W, N) and g as (H', W', N, C_out)), giving (C_in, kh, kw, C_out).
    dw = lax.conv_general_dilated(
        x.transpose(3, 1, 2, 0),
        g.transpose(1, 2, 0, 3),
        (1, 1),
        [(padding, padding)] * 2,
        dimension_numbers=_NHWC,
    ).transpose(1, 2, 0, 3)
    return dx, dw


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


def max_pool(x: jax.Array, window: int = 3, stride: int = 2, padding: int = 1) -> jax.Array:
    """Max-pool NHWC like ``torch.nn.MaxPool2d`` (padding with -inf), as the max of strided slices."""
    h, w = x.shape[1:3]
    xp = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)), constant_values=-jnp.inf)
    ho = (h + 2 * padding - window) // stride + 1
    wo = (w + 2 * padding - window) // stride + 1
    out = None
    for dy in range(window):
        for dx in range(window):
            s = xp[:, dy : dy + stride * (ho - 1) + 1 : stride, dx : dx + stride * (wo - 1) + 1 : stride, :]
            out = s if out is None else jnp.maximum(out, s)
    return out


def lp_pool(x: jax.Array, window: int = 2) -> jax.Array:
    """``torch.nn.LPPool2d(2, window, stride=window)``: the L2 norm of each window (inputs here are post-relu)."""
    n, h, w, c = x.shape
    s = (x * x).reshape(n, h // window, window, w // window, window, c).sum((2, 4))
    # sqrt has an infinite derivative at 0: give dead windows a zero gradient instead of NaN.
    positive = s > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, s, 1.0)), 0.0)


class Conv(nn.Module):
    """Stride-1 convolution with bias on NHWC inputs, through ``conv2d``; params ``kernel`` (HWIO) and ``bias``."""

    features: int
    kernel_size: int
    padding: int
    kernel_init: Callable = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape = (self.kernel_size, self.kernel_size, x.shape[-1], self.features)
        kernel = self.param("kernel", self.kernel_init, shape)
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        return conv2d(x, kernel, self.padding) + bias
