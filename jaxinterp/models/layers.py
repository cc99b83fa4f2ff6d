"""Convolution and pooling building blocks, written for speed on CPU, and the Flax modules that use them.

Two choices here decide the speed of everything built on the models (measured on a 2-core CPU; see
benchmarks/HISTORY.md and `benchmarks/bench_conv.py`, `benchmarks/bench_ppo_step.py`):
- ``conv2d`` is a ``jax.custom_vjp`` whose backward passes are themselves standard-layout convolutions. Inside
  ``lax.scan`` XLA:CPU otherwise keeps backward convolutions in a non-standard kernel layout that runs as generated
  loops (6-22x slower); gradients are identical to the plain convolution's. The RGB input's convolution runs as a
  matmul over channels-first patches instead (XLA's convolution is slowest there).
- ``max_pool`` is the max of the 9 window taps (strided slices of the -inf padded input), with a ``custom_vjp``
  that routes the gradient at output resolution through the 2x2 phase sub-grids: the backward of ``lax.reduce_window``
  (select_and_scatter) cost as much as all the convolutions' weight gradients, and autodiff of strided slices
  (9 full-size pads) still cost ~35% of a PPO gradient step.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["FEW_CHANNELS", "Conv", "conv2d", "lp_pool", "max_pool"]

_NHWC = ("NHWC", "HWIO", "NHWC")


def _conv(x: jax.Array, w: jax.Array, padding: int) -> jax.Array:
    """Plain stride-1 NHWC convolution with symmetric zero padding (the reference for ``conv2d``)."""
    return lax.conv_general_dilated(x, w, (1, 1), [(padding, padding)] * 2, dimension_numbers=_NHWC)


FEW_CHANNELS = 4
"""Convolutions of at most this many input channels (the RGB input's) run as `_conv_patches`."""


def _conv_patches(x: jax.Array, w: jax.Array, padding: int) -> jax.Array:
    """``_conv`` as one matmul over the input's patches, laid out channels-first so that every copy moves whole
    image rows. For 3 input channels XLA:CPU's convolution reads the input 3 floats at a time: at 64x64 this runs
    1.5x faster forward and its autodiff input gradient 2.5x faster (`benchmarks/bench_conv.py`)."""
    kh, kw, cin, cout = w.shape
    n, h, wd, _ = x.shape
    ho, wo = h + 2 * padding - kh + 1, wd + 2 * padding - kw + 1
    xc = jnp.pad(x.transpose(3, 0, 1, 2), ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    patches = jnp.stack([xc[:, :, dy : dy + ho, dx : dx + wo] for dy in range(kh) for dx in range(kw)])
    out = w.reshape(kh * kw * cin, cout).T @ patches.reshape(kh * kw * cin, n * ho * wo)
    return out.reshape(cout, n, ho, wo).transpose(1, 2, 3, 0)


def _conv_patches_input_grad(g: jax.Array, w: jax.Array, padding: int, x_shape) -> jax.Array:
    """The input gradient of `_conv_patches`: per pixel, the cotangent times the kernel gives each tap's share
    (one matmul), added back at the tap's offset. Kept in NHWC, where the gradient arrives (a channels-first
    transpose here fused into the layers above and ran 4x slower)."""
    kh, kw, cin, cout = w.shape
    n, h, wd, _ = x_shape
    ho, wo = g.shape[1:3]
    taps = (g.reshape(-1, cout) @ w.reshape(kh * kw * cin, cout).T).reshape(n, ho, wo, kh * kw, cin)
    full = jnp.zeros((n, h + 2 * padding, wd + 2 * padding, cin), g.dtype)
    for k in range(kh * kw):
        dy, dx = divmod(k, kw)
        full = full.at[:, dy : dy + ho, dx : dx + wo].add(taps[:, :, :, k])
    return full[:, padding : padding + h, padding : padding + wd]


def _conv_fast(x: jax.Array, w: jax.Array, padding: int) -> jax.Array:
    return (_conv_patches if w.shape[2] <= FEW_CHANNELS else _conv)(x, w, padding)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv2d(x: jax.Array, w: jax.Array, padding: int) -> jax.Array:
    """Stride-1 NHWC convolution (kernel HWIO, symmetric zero padding) with a scan-friendly backward pass."""
    return _conv_fast(x, w, padding)


def _conv2d_fwd(x, w, padding):
    return _conv_fast(x, w, padding), (x, w)


def _conv2d_bwd(padding, residuals, g):
    x, w = residuals
    kh = w.shape[0]
    if w.shape[2] <= FEW_CHANNELS:
        dx = _conv_patches_input_grad(g, w, padding, x.shape)
    else:
        # A "full" convolution of g with the kernel flipped spatially and in/out channels swapped.
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


# The 3x3 / stride-2 / pad-1 pool seen as 2x2 phases of the padded input: window row dy of output row i is padded
# row 2i + dy = (block i + dy // 2, phase dy % 2). Offsets (block, phase) for dy (and dx) = 0, 1, 2:
_POOL_TAPS = ((0, 0), (0, 1), (1, 0))


def _pool_windows(x: jax.Array):
    """The 9 window taps of every output, as (N, ho, wo, C) strided slices, in row-major window order."""
    h, w = x.shape[1:3]
    ho, wo = (h + 1) // 2, (w + 1) // 2
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
    for dy in range(3):
        for dx in range(3):
            yield xp[:, dy : dy + 2 * ho - 1 : 2, dx : dx + 2 * wo - 1 : 2]


@jax.custom_vjp
def max_pool(x: jax.Array) -> jax.Array:
    """``torch.nn.MaxPool2d(3, stride=2, padding=1)`` on NHWC (IMPALA's pool), with a fast custom backward."""
    return _max_pool_fwd(x)[0]


def _max_pool_fwd(x):
    # Which tap is the window's first maximum: the least k with tap_k == max. XLA fuses this into the backward and
    # recomputes it there; as a min over equalities that costs 2.5x less than a running strict-greater argmax.
    taps = list(_pool_windows(x))
    best = functools.reduce(jnp.maximum, taps)
    first = jnp.stack([jnp.where(t == best, jnp.int8(k), jnp.int8(len(taps))) for k, t in enumerate(taps)])
    return best, (first.min(0), x.shape)


def _max_pool_bwd(residuals, g):
    # Each tap's gradient lands on one phase sub-grid, shifted by its block offset: everything stays at the output
    # resolution until one interleave of the four phases (autodiff of the strided slices, 9 full-size pads, cost
    # ~35% of a PPO gradient step).
    idx, (n, h, w, c) = residuals
    ho, wo = g.shape[1:3]
    grads = [[jnp.zeros((n, ho + 1, wo + 1, c), g.dtype) for _ in range(2)] for _ in range(2)]
    k = 0
    for by, py in _POOL_TAPS:
        for bx, px in _POOL_TAPS:
            tap = jnp.where(idx == k, g, 0)
            grads[py][px] = grads[py][px] + jnp.pad(tap, ((0, 0), (by, 1 - by), (bx, 1 - bx), (0, 0)))
            k += 1
    full = jnp.stack([jnp.stack(row, 1) for row in grads], 1)  # (N, 2, 2, ho + 1, wo + 1, C)
    full = full.transpose(0, 3, 1, 4, 2, 5).reshape(n, 2 * ho + 2, 2 * wo + 2, c)
    return (full[:, 1 : h + 1, 1 : w + 1],)


max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


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
