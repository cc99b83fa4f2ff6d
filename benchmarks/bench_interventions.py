"""Ablate every channel of a layer, one at a time, on the same levels: jaxinterp's one batched sweep against a torch
forward-hook loop that runs one edit after another (the way intervention studies on Procgen agents are written).

Both sides play the clean agent plus one zero-ablation per channel, each on the same ``--levels`` unseen levels
(cloned from procgen's state), episodes to completion with sampled actions; both compute the edited and the clean
policy every step (for the KL) and share the host bookkeeping (`play_levels`: procgen, paths, what is reached), so
the ratio is what playing all edits as one batch buys: frames shared by several environments (edits that leave the
agent's course unchanged) pass the network up to the edited layer once, for the clean and the edited policy alike,
and games in the same state are read once. Run (needs torch; see the README):

    uv run python benchmarks/bench_interventions.py --layer conv_seqs.2.res_block1 --levels 64 --out ablate2/

The torch loop's runs are alike (one edit over the same levels each), so ``--torch-edits N`` times only N of its
runs (clean and evenly spaced channels) and scales their mean time to every edit; the output says which figure is
measured and which scaled. The jaxinterp side always plays the whole sweep.
"""

import argparse
import sys
import time
from pathlib import Path

from jaxinterp.cli.startup import no_ynn_fusions

no_ynn_fusions()  # as `jaxinterp intervene` runs (before JAX starts)

import jax
import numpy as np
import torch

from jaxinterp.interventions import ablate_each, make_levels, run_sweep
from jaxinterp.interventions.play import play_levels
from jaxinterp.report.intervention_figures import write_sweep
from jaxinterp.rl.evaluate import level_config
from jaxinterp.weights.store import default_checkpoint, load_agent

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from torch_models import TORCH_MODELS


def torch_loop(model, layer: str, channels: list[int | None], levels, seed: int, max_steps: int):
    """One torch run per edit (None: clean), each over every level; returns each run's success rate."""
    module = model.get_submodule(layer)
    rates = []
    for c in channels:
        gen = torch.Generator().manual_seed(seed)

        def hook(_m, _i, out, c=c):
            out = out.clone()
            out[:, c] = 0
            return out

        def policy(obs, envs, t, _same, gen=gen, c=c):
            x = torch.as_tensor(obs)
            with torch.inference_mode():
                clean = model(x)[0]
                handle = module.register_forward_hook(hook) if c is not None else None
                edited = model(x)[0] if handle else clean
                if handle:
                    handle.remove()
                lp, lq = torch.log_softmax(clean, -1), torch.log_softmax(edited, -1)
                kl = (lp.exp() * (lp - lq)).sum(-1)
                actions = torch.multinomial(lq.exp(), 1, generator=gen)[:, 0]
            return actions.numpy().astype(np.int32), kl.numpy()

        level_of = np.arange(len(levels.seeds), dtype=np.int32)
        result = play_levels(policy, levels, level_of, max_steps=max_steps, progress_bar=False)
        rates.append(float(result.success.mean()))
    return rates


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layer", default="conv_seqs.2.res_block1")
    p.add_argument("--levels", type=int, default=64)
    p.add_argument("--channels", default="all")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-steps", type=int, default=1000)
    p.add_argument("--torch-edits", type=int, help="time only N of the torch loop's runs and scale to all")
    p.add_argument(
        "--out", help="also write the jaxinterp sweep's results there (as `jaxinterp intervene --out`)"
    )
    args = p.parse_args()
    checkpoint = default_checkpoint()
    agent = load_agent(checkpoint)
    model = TORCH_MODELS[agent.arch.name](num_actions=agent.num_actions).eval()
    model.load_state_dict(
        {k: torch.as_tensor(v) for k, v in torch.load(checkpoint, weights_only=True).items()}
    )
    levels = make_levels(level_config("unseen", num_envs=args.levels, seed=args.seed))
    edits = ablate_each(agent, args.layer, args.channels)
    channels = [None, *(int(e.split(":")[1].split("=")[0]) for e in edits)]
    print(
        f"# {args.layer}: clean + {len(edits)} zero-ablations x {args.levels} levels, to completion (<= "
        f"{args.max_steps} steps); jax {jax.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )
    t = time.perf_counter()
    sweep = run_sweep(agent, edits, levels, seed=args.seed, max_steps=args.max_steps, progress=False)
    jax_s = time.perf_counter() - t
    if args.out:
        print(f"wrote {write_sweep(args.out, sweep)}")
    t = time.perf_counter()
    n = min(args.torch_edits or len(channels), len(channels))
    timed = [channels[i] for i in np.linspace(0, len(channels) - 1, n).round().astype(int)]
    rates = torch_loop(model, args.layer, timed, levels, args.seed, args.max_steps)
    torch_measured = time.perf_counter() - t
    torch_s = torch_measured * len(channels) / len(timed)
    if len(timed) < len(channels):
        print(
            f"torch loop: {torch_measured:.1f} s measured for {len(timed)} of {len(channels)} runs {timed}, scaled"
        )
    episodes = len(sweep.which)
    print(
        "| side | seconds | episodes/s | clean success | mean success under ablation |\n|---|---|---|---|---|"
    )
    jax_rates = [r["success"] for r in sweep.rows]
    for name, secs, rs in (("jaxinterp sweep", jax_s, jax_rates), ("torch hook loop", torch_s, rates)):
        print(f"| {name} | {secs:.1f} | {episodes / secs:.2f} | {rs[0]:.1%} | {np.mean(rs[1:]):.1%} |")
    print(f"\ntorch / jaxinterp time: {torch_s / jax_s:.2f}x")


if __name__ == "__main__":
    main()
