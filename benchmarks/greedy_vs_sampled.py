"""Why the greedy policy (the argmax of the logits) plays worse than actions sampled from them: the same agent on
the same unseen levels both ways, and where the greedy episodes that fail spend their time.

Heist is deterministic, so a deterministic policy that meets a frame it has seen before repeats what it did there:
once it walks back and forth between two places, or into a wall, it does so until the 1000-step timeout. Sampling
breaks such loops. This script counts them: an episode is *stuck* when, over its last 200 steps, the agent stood
on at most `STUCK_PLACES` distinct pixel positions (a maze walked through visits many more). Run:

    uv run python benchmarks/greedy_vs_sampled.py --levels 256
"""

import argparse

import numpy as np

from jaxinterp.cli.startup import no_ynn_fusions

no_ynn_fusions()  # as the `jaxinterp` commands run (before JAX starts)

from jaxinterp.envs.heist import MOVE_OF_ACTION
from jaxinterp.interventions import compile_edits, make_levels, play
from jaxinterp.rl.evaluate import level_config
from jaxinterp.weights.store import default_checkpoint, load_agent

WINDOW = 200
STUCK_PLACES = 8


def stuck(path: np.ndarray, length: int) -> bool:
    """At most `STUCK_PLACES` distinct (rounded) positions over the episode's last `WINDOW` steps."""
    tail = path[max(0, length - WINDOW) : length + 1]
    return len(np.unique(np.round(tail), axis=0)) <= STUCK_PLACES


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--levels", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    agent = load_agent(default_checkpoint())
    levels = make_levels(level_config("unseen", num_envs=args.levels, seed=args.seed))
    which, level_of = np.zeros(args.levels, np.int32), np.arange(args.levels, dtype=np.int32)
    edits = compile_edits(agent, [()])
    print(
        f"# {default_checkpoint()}: {args.levels} unseen levels (seed {args.seed}), one episode each, both ways"
    )
    print(
        "| policy | success | timed out | stuck among timed out | stand-still actions |\n|---|---|---|---|---|"
    )
    for greedy in (False, True):
        run = play(agent, levels, edits, which, level_of, seed=args.seed, greedy=greedy, progress_bar=False)
        timeout = ~run.success & (run.length >= 1000)
        stuck_n = sum(stuck(run.path[i], run.length[i]) for i in np.flatnonzero(timeout))
        acts = run.actions[run.actions >= 0]
        still = np.mean(np.asarray(MOVE_OF_ACTION)[acts] == 4)
        print(
            f"| {'greedy (argmax)' if greedy else 'sampled'} | {run.success.mean():.1%} | {timeout.mean():.1%} | "
            f"{stuck_n} of {timeout.sum()} | {still:.1%} |"
        )


if __name__ == "__main__":
    main()
