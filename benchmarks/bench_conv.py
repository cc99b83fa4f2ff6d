"""Each IMPALA convolution shape on its own: jaxinterp's ``conv2d``, the plain XLA convolution
(``lax.conv_general_dilated`` differentiated by JAX) and torch, forward, input gradient and weight gradient, in
GFLOP/s. ``conv2d`` runs the 3-channel input convolution as a patch matmul, the others as XLA convolutions with a
custom backward.

Why: the PPO update, feature visualization and dataset examples all spend 85-95% of their time in these
convolutions, so this table says where jaxinterp can or cannot beat torch on this CPU.
Run: uv run python benchmarks/bench_conv.py [--batch 256] [--dtype bfloat16]  (needs torch; pin with ``taskset -c 0``
for one core). ``--dtype bfloat16`` runs both frameworks' convolutions in bfloat16 (inputs, kernel, cotangent).
Both frameworks use the same number of threads; timings alternate in one process (best of ``--repeats``).
"""

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np
import torch
from bench_forward import best_of  # benchmarks/ is on sys.path when run as a script

from jaxinterp.models.layers import _conv, conv2d

# (spatial size, in channels, out channels, how many of them one IMPALA forward runs)
SHAPES = [(64, 3, 16, 1), (32, 16, 16, 4), (32, 16, 32, 1), (16, 32, 32, 5), (8, 32, 32, 4)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    args = p.parse_args()
    torch.set_num_threads(len(os.sched_getaffinity(0)))  # the cores XLA sees too
    b = args.batch
    print(
        f"# batch {b}, {args.dtype}; jax {jax.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )
    print("| H×W | in→out | × per forward | pass | conv2d GFLOP/s | plain XLA | torch | torch/conv2d |")
    print("|---|---|---|---|---|---|---|---|")
    for h, ci, co, count in SHAPES:
        for name, ours, plain, tor in bench_shape(b, h, ci, co, args.repeats, args.dtype):
            print(
                f"| {h}×{h} | {ci}→{co} | {count} | {name} | {ours:.1f} | {plain:.1f} | {tor:.1f} "
                f"| {tor / ours:.2f}× |",
                flush=True,
            )


def _passes(conv):
    """Jitted forward, input gradient and weight gradient of ``conv(x, w, 1)``."""
    fwd = jax.jit(lambda x, w: conv(x, w, 1))
    dx = jax.jit(lambda x, w, g: jax.vjp(lambda x: conv(x, w, 1), x)[1](g)[0])
    dw = jax.jit(lambda x, w, g: jax.vjp(lambda w: conv(x, w, 1), w)[1](g)[0])
    return fwd, dx, dw


CONVS = {"conv2d": _passes(conv2d), "plain": _passes(_conv)}


def bench_shape(
    b: int, h: int, ci: int, co: int, repeats: int, dtype: str = "float32"
) -> list[tuple[str, float, float]]:
    """(pass, XLA GFLOP/s, torch GFLOP/s) for forward, input gradient and weight gradient of one shape."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((b, h, h, ci), np.float32)
    w = (rng.standard_normal((3, 3, ci, co)) * 0.1).astype(np.float32)
    g = rng.standard_normal((b, h, h, co), np.float32)
    xj, wj, gj = (jnp.asarray(a, dtype) for a in (x, w, g))
    tdt = getattr(torch, dtype)
    # NHWC memory: torch's channels_last
    xt = torch.from_numpy(x).to(tdt).permute(0, 3, 1, 2).requires_grad_()
    wt = torch.from_numpy(w).to(tdt).permute(3, 2, 0, 1).contiguous().requires_grad_()
    gt = torch.from_numpy(g).to(tdt).permute(0, 3, 1, 2)

    def t_fwd():
        with torch.no_grad():
            torch.nn.functional.conv2d(xt, wt, padding=1)

    def t_grad(wrt):
        torch.autograd.grad(torch.nn.functional.conv2d(xt, wt, padding=1), wrt, gt)

    # torch's gradient calls run the forward too (autograd needs it), so XLA's gradient times add one forward.
    def jax_times(fwd, dx, dw):
        t_fwd = best_of(lambda: jax.block_until_ready(fwd(xj, wj)), repeats)
        return (
            t_fwd,
            t_fwd + best_of(lambda: jax.block_until_ready(dx(xj, wj, gj)), repeats),
            t_fwd + best_of(lambda: jax.block_until_ready(dw(xj, wj, gj)), repeats),
        )

    ours, plain = jax_times(*CONVS["conv2d"]), jax_times(*CONVS["plain"])
    torch_times = (
        best_of(t_fwd, repeats),
        best_of(lambda: t_grad(xt), repeats),
        best_of(lambda: t_grad(wt), repeats),
    )
    flops = 2 * b * h * h * 9 * ci * co / 1e9
    return [
        (name, mult * flops / ours[i], mult * flops / plain[i], mult * flops / torch_times[i])
        for i, (name, mult) in enumerate((("forward", 1), ("input grad", 2), ("weight grad", 2)))
    ]


if __name__ == "__main__":
    main()
