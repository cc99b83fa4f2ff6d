"""SAE training speed, side by side in one process: a sweep of TopK SAEs as jaxinterp trains it (one jitted step
vmapped over the members, scanned over blocks of batches) against the same SAEs trained by a plain torch loop (each
member its own forward, backward and Adam step, the way SAELens' multi-SAE trainer runs them), and against a loop
of single jaxinterp SAEs.

Same work on every side: TopK (k = 4, 8, 16, 32 over the members), unit-norm decoder rows with the gradient's
radial part removed, AuxK on dead latents, gradient clipping, Adam; random batches of the real layer's width.

    uv run python benchmarks/bench_sae.py [--members 16] [--steps 64] [--batch 2048] [--width 256] [--d-in 32]
        [--scaling 1,4,16,64,256]

Needs torch (a test-only tool; see the README); torch runs on the GPU when it sees one, as JAX does. Prints samples
(positions) per second and the ratios; --scaling also times the sweep step alone for each member count, to find the
sweep size at which adding members stops being free (on a GPU, where a small SAE leaves most of the chip idle).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

from jaxinterp.sae.config import SAEConfig
from jaxinterp.sae.train import BLOCK, make_train, stack_hypers

KS = (4, 8, 16, 32)
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def jax_sweep(configs, xs, repeats):
    trainer = make_train(configs[0])
    hypers = stack_hypers(configs)
    states = trainer.init(jnp.stack([jax.random.key(c.seed) for c in configs]), jnp.zeros(configs[0].d_in))
    blocks = [jnp.asarray(xs[i : i + BLOCK]) for i in range(0, len(xs), BLOCK)]
    states, _ = trainer.update(states, hypers, blocks[0])  # compile
    jax.block_until_ready(states)
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        for b in blocks:
            states, terms = trainer.update(states, hypers, b)
        jax.block_until_ready(terms)
        best = min(best, time.perf_counter() - t)
    return best


def jax_one_by_one(configs, xs, repeats):
    return sum(jax_sweep([c], xs, repeats) for c in configs)


class TorchTopK(torch.nn.Module):
    def __init__(self, d_in, width, k, k_aux, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(width, d_in, generator=g)
        w /= w.norm(dim=1, keepdim=True)
        self.W_dec = torch.nn.Parameter(w)
        self.W_enc = torch.nn.Parameter(w.T.clone())
        self.b_enc = torch.nn.Parameter(torch.zeros(width))
        self.b_dec = torch.nn.Parameter(torch.zeros(d_in))
        self.k, self.k_aux = k, k_aux
        self.register_buffer("since", torch.zeros(width))

    def loss(self, x, dead_samples):
        pre = (x - self.b_dec) @ self.W_enc + self.b_enc
        vals, idx = pre.topk(self.k, dim=-1)
        z = torch.zeros_like(pre).scatter(-1, idx, vals.relu())
        err = x - (z @ self.W_dec + self.b_dec)
        loss = err.pow(2).mean()
        dead = self.since >= dead_samples
        n_dead = int(dead.sum())
        if n_dead:  # as SAELens: no AuxK when no latent is dead, and at most the dead ones
            masked = pre.masked_fill(~dead, -torch.inf)
            aux_vals, aux_idx = masked.topk(min(self.k_aux, n_dead), dim=-1)
            recon = torch.einsum("bk,bkd->bd", aux_vals.relu(), self.W_dec[aux_idx])
            target = err.detach()
            aux = (target - recon).pow(2).sum() / (target - target.mean(0)).pow(2).sum()
            loss = loss + aux / 32
        with torch.no_grad():
            fired = (z > 0).any(0)
            self.since = torch.where(fired, torch.zeros_like(self.since), self.since + len(x))
        return loss


def torch_loop(configs, xs, repeats):
    c0 = configs[0]
    saes = [TorchTopK(c.d_in, c.width, c.k, c0.k_aux, c.seed).to(DEVICE) for c in configs]
    opts = [torch.optim.Adam(s.parameters(), lr=c.lr) for s, c in zip(saes, configs, strict=True)]
    batches = [torch.from_numpy(np.asarray(x)).to(DEVICE) for x in xs]

    def step(sae, opt, x):
        opt.zero_grad(set_to_none=True)
        sae.loss(x, c0.dead_samples).backward()
        with torch.no_grad():
            w, g = sae.W_dec, sae.W_dec.grad
            g -= (g * w).sum(1, keepdim=True) * w
        torch.nn.utils.clip_grad_norm_(sae.parameters(), c0.max_grad_norm)
        opt.step()
        with torch.no_grad():
            sae.W_dec /= sae.W_dec.norm(dim=1, keepdim=True)

    for sae, opt in zip(saes, opts, strict=True):  # warm-up
        step(sae, opt, batches[0])
    best = np.inf
    for _ in range(repeats):
        _sync()
        t = time.perf_counter()
        for x in batches:
            for sae, opt in zip(saes, opts, strict=True):
                step(sae, opt, x)
        _sync()
        best = min(best, time.perf_counter() - t)
    return best


def _sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--members", type=int, default=16)
    ap.add_argument("--steps", type=int, default=64, help="timed steps (a multiple of 16)")
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--d-in", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--scaling", default="", help="comma-separated member counts to time the sweep step alone at"
    )
    ap.add_argument(
        "--dead-samples",
        type=int,
        default=SAEConfig.dead_samples,
        help="samples without firing before a latent is dead; small values keep AuxK running on both sides",
    )
    args = ap.parse_args()

    def sweep_configs(members):
        return [
            SAEConfig(
                d_in=args.d_in,
                width=args.width,
                arch="topk",
                k=KS[i % len(KS)],
                seed=i,
                batch_size=args.batch,
                dead_samples=args.dead_samples,
            )
            for i in range(members)
        ]

    configs = sweep_configs(args.members)
    xs = np.random.default_rng(0).normal(size=(args.steps, args.batch, args.d_in)).astype(np.float32)
    samples = args.steps * args.batch
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores; jax {jax.__version__} "
        f"({len(jax.devices())} {jax.devices()[0].platform} device(s)), torch {torch.__version__} "
        f"({DEVICE.type}, {torch.get_num_threads()} threads); {args.members} TopK SAEs {args.d_in}->{args.width}, batch {args.batch}, "
        f"{args.steps} steps, dead after {args.dead_samples:,} samples, best of {args.repeats}"
    )
    t_sweep = jax_sweep(configs, xs, args.repeats)
    t_torch = torch_loop(configs, xs, args.repeats)
    t_single = jax_one_by_one(configs, xs, args.repeats)
    t_torch1 = torch_loop(configs[:1], xs, args.repeats)
    t_jax1 = jax_sweep(configs[:1], xs, args.repeats)
    rows = [
        ("jaxinterp sweep, one jitted step", t_sweep, args.members),
        ("torch loop over the members", t_torch, args.members),
        ("jaxinterp, members one by one", t_single, args.members),
        ("jaxinterp, one SAE", t_jax1, 1),
        ("torch, one SAE", t_torch1, 1),
    ]
    print(f"{'':36} {'seconds':>8} {'SAE-samples/s':>14}")
    for name, t, m in rows:
        print(f"{name:36} {t:8.3f} {samples * m / t:14,.0f}")
    print(
        f"sweep speed-up: {t_torch / t_sweep:.2f}x over the torch loop, {t_single / t_sweep:.2f}x over single jaxinterp SAEs"
    )
    print(f"one SAE: jaxinterp {t_torch1 / t_jax1:.2f}x the torch step's samples/s")
    if args.scaling:
        print(f"{'members':>8} {'ms/step':>9} {'vs one SAE':>10} {'SAE-samples/s':>14}")
        t_one = None
        for m in (int(v) for v in args.scaling.split(",")):
            t = jax_sweep(sweep_configs(m), xs, args.repeats)
            t_one = t_one or t
            print(f"{m:8d} {1e3 * t / args.steps:9.3f} {t / t_one:9.2f}x {samples * m / t:14,.0f}")


if __name__ == "__main__":
    main()
