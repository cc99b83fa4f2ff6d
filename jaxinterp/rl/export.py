"""Export a training run's policy as a shippable agent: torch-layout ``.pt``, ``.safetensors``, colour statistics
of its frames, and a model card (JSON and Markdown) with its evaluation beside the random policy's and its learning
curve beside the published PPO baseline's.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import jax
import numpy as np

from jaxinterp.atomic import write_text
from jaxinterp.envs.heist import HeistEnv
from jaxinterp.envs.rollout import agent_policy
from jaxinterp.envs.stepping import keyed, step_policy
from jaxinterp.featviz.param import fit_color_stats, save_color_stats
from jaxinterp.models.agent import Agent
from jaxinterp.rl.evaluate import evaluate, level_config
from jaxinterp.rl.ppo import PPOConfig
from jaxinterp.rl.train import METRICS_FILE, logged_rows, save_learning_curve
from jaxinterp.weights.store import save_agent
from jaxinterp.weights.training_run import load_run_agent

__all__ = [
    "COLOR_FRAMES",
    "agent_frames",
    "export_agent",
    "model_card_markdown",
    "train_command",
    "write_learning_curve",
]

COLOR_FRAMES = 4096  # frames of the agent's own play used to fit the colour decorrelation


def agent_frames(agent: Agent, frames: int, *, seed: int = 0, num_envs: int = 64) -> np.ndarray:
    """uint8 frames of ``agent`` playing unseen Heist levels (sampled actions)."""
    env = HeistEnv(level_config("unseen", num_envs=num_envs, seed=seed))
    policy = keyed(agent_policy(agent), jax.random.key(seed))
    out = [step.obs for step in step_policy(env, policy, steps=-(-frames // num_envs))]
    env.close()
    return np.concatenate(out)[:frames]


def export_agent(
    run_dir: str | Path,
    out: str | Path,
    *,
    checkpoint: str | Path | None = None,
    episodes: int = 1000,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Write ``out``.pt/.safetensors/.color.json/.card.json/.md from one checkpoint of the run (default its latest);
    returns the card."""
    agent, meta = load_run_agent(run_dir, checkpoint)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stem = out.with_suffix("") if out.suffix in (".pt", ".safetensors") else out
    save_agent(agent, stem.with_suffix(".pt"))
    save_agent(agent, stem.with_suffix(".safetensors"))
    stats = fit_color_stats(agent_frames(agent, COLOR_FRAMES, seed=seed))
    save_color_stats(stem.with_suffix(".color.json"), stats.matrix, stats.mean)
    results = evaluate(
        agent, episodes=episodes, levels="unseen", seed=seed, with_greedy=True, progress=progress
    )
    card = {
        "name": stem.name,
        "architecture": agent.arch.name,
        "num_actions": agent.num_actions,
        "parameters": agent.num_params,
        "frames_trained": meta["frames"],
        "ppo_config": meta["ppo"],
        "train_seed": meta["seed"],
        "train_command": train_command(run_dir, meta),
        "export_command": "uv run jaxinterp " + shlex.join(sys.argv[1:]) if sys.argv[1:] else None,
        "evaluation": {
            "levels": "unseen",
            "episodes": episodes,
            "seed": seed,
            "policy": "sampled from the logits",
            "agent": results["agent"].to_dict(),
            "greedy": results["greedy"].to_dict(),
            "random": results["random"].to_dict(),
        },
        "color_stats": {"matrix": stats.matrix.tolist(), "mean": stats.mean.tolist(), "frames": COLOR_FRAMES},
    }
    card["learning_curve"] = write_learning_curve(run_dir, meta, stem.with_suffix(".curve.png"))
    write_text(stem.with_suffix(".card.json"), json.dumps(card, indent=2) + "\n")
    write_text(stem.with_suffix(".md"), model_card_markdown(card))
    return card


def write_learning_curve(run_dir: str | Path, meta: dict, path: Path) -> dict:
    """The run's learning curve up to the exported checkpoint, beside the PPO baseline's when the run plays its
    game; returns what the card says of it (the file, and the baseline's return at the same frames)."""
    rows = logged_rows(Path(run_dir) / METRICS_FILE, meta["iteration"])
    baseline = save_learning_curve(rows, path, meta["ppo"])
    out = {"file": path.name}
    if baseline is not None:
        i = int(np.clip(np.searchsorted(baseline.frames, meta["frames"]), 0, len(baseline.frames) - 1))
        out["baseline_at_frames"] = {
            "frames": int(baseline.frames[i]),
            "return_mean": round(float(baseline.return_mean[i]), 2),
            "return_std": round(float(baseline.return_std[i]), 2),
        }
    return out


def train_command(run_dir: str | Path, meta: dict) -> str:
    """The `train-agent` command that reproduces the run: its config as the changes from the defaults (JSON
    values, so `--config` parses them back), compute-only settings left out; a forked run names its source, whose
    own card or config.json says how that was trained."""
    defaults = PPOConfig().algorithm_dict()
    run = PPOConfig.from_dict(meta["ppo"]).algorithm_dict()
    changed = {k: v for k, v in run.items() if v != defaults[k]}
    config = f" --config {','.join(f'{k}={json.dumps(v)}' for k, v in changed.items())}" if changed else ""
    fork = f" --init-from {meta['init_from']['run']}" if "init_from" in meta else ""
    return (
        f"uv run jaxinterp train-agent --frames {meta['frames']} --out {Path(run_dir).as_posix()}{config} "
        f"--seed {meta['seed']}{fork}"
    )


def _row(name: str, e: dict) -> str:
    return (
        f"| {name} | {e['mean_return']:.2f} ± {e['return_ci95']:.2f} | "
        f"{e['success_rate']:.1%} ± {e['success_ci95']:.1%} |"
    )


def _curve_markdown(card: dict) -> str:
    curve = card.get("learning_curve")
    if not curve:
        return ""
    text = f"\n## Learning curve\n\n![learning curve]({curve['file']})\n"
    b = curve.get("baseline_at_frames")
    if b:
        text += (
            "\nThe dashed line is OpenAI's PPO baseline on the same game (openai/train-procgen, easy mode, unbounded "
            f"levels, 3 seeds, 3 epochs x 8 minibatches): at {b['frames']:,} frames its training return was "
            f"{b['return_mean']:.2f} ± {b['return_std']:.2f} (mean ± std over the seeds); this agent's training "
            "curves are the solid lines.\n"
        )
    return text


def model_card_markdown(card: dict) -> str:
    e = card["evaluation"]
    return f"""# {card["name"]}: a PPO agent for Procgen Heist

- architecture: `{card["architecture"]}` ({card["parameters"]:,} parameters, {card["num_actions"]} actions)
- trained for {card["frames_trained"]:,} frames with jaxinterp's PPO (easy mode, unbounded levels, seed {card["train_seed"]})
- train command: `{card["train_command"]}`

## Evaluation ({e["episodes"]} episodes on unseen levels, seed {e["seed"]}, actions {e["policy"]} unless said)

| policy | mean return (95% interval) | success rate |
|---|---|---|
{_row("this agent", e["agent"])}
{_row("this agent, greedy (argmax of the logits)", e["greedy"])}
{_row("random", e["random"])}

Greedy play is lower: Heist is deterministic, so the argmax policy does the same thing again on a frame it has seen
before, and once it paces between two places or walks into a wall it stays there until the 1000-step timeout;
sampling breaks such loops (`benchmarks/greedy_vs_sampled.py` counts them).
{_curve_markdown(card)}
Colour decorrelation (fitted on {card["color_stats"]["frames"]} frames of its play): see `{card["name"]}.color.json`.
"""
