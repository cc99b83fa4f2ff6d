"""How much error a layer can take before the agent's argmax action changes: the yardstick for an SAE's action
agreement.

On held-out frames of a rollout dataset (the episodes `jaxinterp sae` holds out), prints how often the policy's two
most likely actions are nearly tied, and the action agreement with the clean agent when isotropic Gaussian noise of
a given FVU (the noise's squared norm over the layer's variance per position, as `sae eval` pools it) is added to
the layer. An SAE that beats the noise of its own FVU puts its error where the policy does not read. Run:

    uv run python benchmarks/policy_sensitivity.py --dataset data64k/ --layer conv_seqs.2.res_block1
"""

import argparse

import jax
import numpy as np

from jaxinterp.cli.startup import no_ynn_fusions

no_ynn_fusions()  # as the `jaxinterp` commands run (before JAX starts)

from jaxinterp.envs.dataset import Dataset
from jaxinterp.sae.data import evenly, heldout_mask
from jaxinterp.weights.store import default_checkpoint, load_agent

GAPS = (0.01, 0.03, 0.1)
FVUS = (0.001, 0.005, 0.02, 0.03, 0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True, help="a rollout dataset (`jaxinterp rollout`)")
    parser.add_argument("--layer", default="conv_seqs.2.res_block1")
    parser.add_argument("--frames", type=int, default=4096, help="held-out frames used (evenly spaced)")
    parser.add_argument("--checkpoint", default=None, help="agent (default: the shipped one)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise")
    args = parser.parse_args()

    agent = load_agent(args.checkpoint or default_checkpoint())
    agent.check_layers([args.layer])
    data = Dataset(args.dataset)
    heldout = np.flatnonzero(heldout_mask(data.column("episode_ids")))
    frames = data.get(evenly(heldout, args.frames), fields=["frames"])["frames"]
    logits_name = agent.arch.logits
    acts = agent.activations(frames, [args.layer, logits_name])
    x, logits = np.asarray(acts[args.layer]), np.asarray(acts[logits_name])
    clean = logits.argmax(-1)
    top2 = np.sort(np.asarray(jax.nn.log_softmax(logits)), -1)[:, -2:]
    gap = top2[:, 1] - top2[:, 0]
    print(f"{len(frames)} held-out frames, {args.layer}")
    for g in GAPS:
        print(f"  top two actions within {g} nats (log-probability): {np.mean(gap < g):.1%} of frames")
    flat = x.reshape(-1, x.shape[-1])
    variance = float(((flat - flat.mean(0)) ** 2).sum(-1).mean())
    rng = np.random.default_rng(args.seed)
    for fvu in FVUS:
        noise = rng.normal(size=x.shape) * np.sqrt(fvu * variance / x.shape[-1])
        out = agent.forward_from(agent.params, args.layer, (x + noise).astype(np.float32))[logits_name]
        print(f"  Gaussian noise at FVU {fvu}: action agreement {np.mean(np.argmax(out, -1) == clean):.1%}")


if __name__ == "__main__":
    main()
