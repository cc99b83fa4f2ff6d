"""Flax forward vs torch forward (same weights, same frames) at batch 1, 64 and 1024, and rollout frames/s.

Run: uv run python benchmarks/bench_forward.py  (needs torch: see the README). Timings alternate between the two
frameworks in one process so that machine noise hits both; the ratio is what to compare.
"""

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np
import torch

import jaxinterp
from jaxinterp.envs.heist import HeistConfig
from jaxinterp.envs.rollout import agent_policy, collect, random_policy

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from torch_models import random_model


def best_of(fn, repeats: int) -> float:
    """Seconds of the fastest of ``repeats`` timed calls, after one untimed call (compilation, caches)."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--arch", default="impala")
    p.add_argument("--batches", default="1,64,1024")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = random_model(args.arch, num_actions=15)
    agent = jaxinterp.agent_from_state_dict({k: v.numpy() for k, v in model.state_dict().items()})
    apply = jax.jit(agent.apply)
    rng = np.random.default_rng(0)
    print(
        f"# {args.arch}; jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads)"
    )
    print("| batch | flax ms | torch ms | torch/flax |\n|---|---|---|---|")
    for b in map(int, args.batches.split(",")):
        obs = rng.integers(0, 256, (b, 64, 64, 3), dtype=np.uint8)
        jax.block_until_ready(apply(agent.params, obs))
        tobs = torch.as_tensor(obs)

        def flax_fwd(obs=obs):
            jax.block_until_ready(apply(agent.params, obs))

        def torch_fwd(tobs=tobs):
            with torch.inference_mode():
                model(tobs)

        torch_fwd()
        tf, tt = best_of(flax_fwd, args.repeats), best_of(torch_fwd, args.repeats)
        print(f"| {b} | {tf * 1e3:.1f} | {tt * 1e3:.1f} | {tt / tf:.2f} |")

    import tempfile

    print("\n| rollout (64 envs, 8192 frames) | frames/s |\n|---|---|")
    for name, policy in (("random policy", random_policy()), ("agent policy (sampled)", agent_policy(agent))):
        with tempfile.TemporaryDirectory() as d:
            collect(
                d, frames=64 * 4, policy=policy, env_config=HeistConfig(64), seed=0, progress=False
            )  # compile
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            collect(d, frames=8192, policy=policy, env_config=HeistConfig(64), seed=0, progress=False)
            print(f"| {name} | {8192 / (time.perf_counter() - t):.0f} |")


if __name__ == "__main__":
    main()
