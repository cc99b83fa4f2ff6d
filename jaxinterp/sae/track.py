"""Object tracking with an SAE latent: its spatial map over every frame of an episode, drawn over the frames (an
animated GIF and a strip per episode), scored against the ground-truth mask of an object class."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from jaxinterp.envs.dataset import Dataset
from jaxinterp.envs.ground_truth import OBJECT_CLASSES
from jaxinterp.envs.heist import HeistConfig
from jaxinterp.envs.rollout import agent_policy, collect
from jaxinterp.errors import JaxinterpError
from jaxinterp.models.agent import Agent
from jaxinterp.models.receptive import receptive_field, upsample
from jaxinterp.render import overlay
from jaxinterp.sae import metrics
from jaxinterp.sae.runs import EVAL_FILE, load_member

SCALE = 4  # pixels per frame pixel in the GIFs and strips
STRIP_FRAMES = 10
GAP = 8  # white pixels between the strip's frames
GIF_MS = 120  # per frame
CANDIDATES = 4
"""Levels played per episode asked for; those shown are the ones where the object is seen longest."""
MASK_COLOUR = np.array([0, 255, 255], np.uint8)  # the object's outline, cyan over the heat's inferno colours


def choose_latent(sae_dir: Path, latent: int | None, object_class: str | None, d_sae: int) -> tuple[int, str]:
    """(latent, class): the given ones, else the latent with the best held-out F1 for the class (``eval.json``),
    else the class that latent tracks best; with neither, the best latent of any class but floor and wall."""
    if object_class is not None and object_class not in OBJECT_CLASSES:
        raise JaxinterpError(f"unknown object {object_class!r}; choose one of {', '.join(OBJECT_CLASSES)}")
    if latent is not None and not 0 <= latent < d_sae:
        raise JaxinterpError(f"latent {latent} is out of range: the SAE has latents 0-{d_sae - 1}")
    if latent is not None and object_class is not None:
        return latent, object_class
    evaluation = sae_dir / EVAL_FILE
    if not evaluation.exists():
        raise JaxinterpError(
            f"{sae_dir} has no {EVAL_FILE}: run `jaxinterp sae eval --sae {sae_dir}` or pass both --latent and --object"
        )
    scores = json.loads(evaluation.read_text())["objects"]
    candidates = [
        c
        for c in OBJECT_CLASSES
        if c not in ("floor", "wall") and scores[c]["latent_f1"] == scores[c]["latent_f1"]
    ]
    if object_class is not None:
        return scores[object_class]["latent"], object_class
    if latent is not None:  # the class this latent is best for, among those where it is the best latent
        mine = [c for c in candidates if scores[c]["latent"] == latent]
        return latent, max(mine or candidates, key=lambda c: scores[c]["latent_f1"])
    best = max(candidates, key=lambda c: scores[c]["latent_f1"])
    return scores[best]["latent"], best


def render(frames: np.ndarray, heat: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(T, 64*SCALE, 64*SCALE, 3): the heat over the frames, the object's pixels outlined."""
    out = overlay(frames, heat, alpha=0.6, weighted=True, vmin=0.0).repeat(SCALE, 1).repeat(SCALE, 2)
    big = mask.repeat(SCALE, 1).repeat(SCALE, 2)
    edge = big & ~(np.roll(big, 1, 1) & np.roll(big, -1, 1) & np.roll(big, 1, 2) & np.roll(big, -1, 2))
    out[edge] = MASK_COLOUR
    return out


def track_episodes(
    agent: Agent,
    sae_dir: str | os.PathLike,
    *,
    out_dir: str | os.PathLike,
    latent: int | None = None,
    object_class: str | None = None,
    episodes: int = 2,
    seed: int = 0,
    max_steps: int = 300,
    progress: bool = True,
) -> list[str]:
    """Play ``episodes`` levels (drawn with ``seed``) with the agent, and write per episode ``episode_<i>.gif`` and
    ``episode_<i>_strip.png`` of the latent's map, and ``tracking.json`` with the per-episode F1 of "the latent
    fires here" against "the class is under this position". Returns one line per episode."""
    sae_dir = Path(sae_dir)
    sae = load_member(sae_dir, agent)
    if sae.layer not in agent.conv_layer_names:
        raise JaxinterpError(f"tracking needs a spatial layer; {sae.layer} is dense")
    latent, object_class = choose_latent(sae_dir, latent, object_class, sae.d_sae)
    if episodes < 1 or max_steps < 1:
        raise JaxinterpError("--episodes and --max-steps must be >= 1")
    out = Path(out_dir)
    envs = CANDIDATES * episodes  # levels without the object would score nothing
    config = HeistConfig(num_envs=envs, start_level=seed, seed=seed)
    data: Dataset = collect(
        out / "data",
        frames=envs * max_steps,
        policy=agent_policy(agent),
        env_config=config,
        seed=seed,
        progress=progress,
    )
    rf = receptive_field(agent, sae.layer)
    cls = OBJECT_CLASSES.index(object_class)
    table = data.episodes()
    chosen = []
    for env in range(envs):
        rows = data.episode_rows(int(table.episode_id[(table.env == env) & (table.first_step == 0)][0]))[
            :max_steps
        ]
        shows = int((data.get(rows, fields=["objects"])["objects"] == cls).any((1, 2)).sum())
        chosen.append((-shows, env, rows))
    lines, results = [], []
    for i, (_, env, rows) in enumerate(sorted(chosen, key=lambda c: c[:2])[:episodes]):
        first = table.episode_id[(table.env == env) & (table.first_step == 0)]
        got = data.get(rows, fields=["frames", "objects"])
        acts = np.asarray(agent.activations(got["frames"], [sae.layer])[sae.layer])
        z = metrics.encode_in_batches(sae, acts.reshape(-1, sae.d_in)).reshape(*acts.shape[:3], -1)[
            ..., latent
        ]
        present = metrics.objects_present(got["objects"], *acts.shape[1:3])[..., cls]
        scores = metrics.object_scores(z.reshape(-1, 1), present.reshape(-1, 1))
        f1 = float(scores.f1[0, 0])
        heat = upsample(np.maximum(z, 0), rf)
        frames = render(got["frames"], heat, got["objects"] == cls)
        gif = out / f"episode_{i}.gif"
        Image.fromarray(frames[0]).save(
            gif,
            save_all=True,
            append_images=[Image.fromarray(f) for f in frames[1:]],
            duration=GIF_MS,
            loop=0,
        )
        pick = np.unique(np.linspace(0, len(frames) - 1, min(STRIP_FRAMES, len(frames))).round().astype(int))
        gap = np.full((frames.shape[1], GAP, 3), 255, np.uint8)
        strip = np.concatenate([x for f in frames[pick] for x in (f, gap)][:-1], axis=1)
        Image.fromarray(strip).save(out / f"episode_{i}_strip.png")
        result = {
            "episode": i,
            "level_seed": int(table.level_seed[table.episode_id == first[0]][0]),
            "frames": len(rows),
            "f1": f1,
            "precision": float(scores.precision[0, 0]),
            "recall": float(scores.recall[0, 0]),
            "object_frames": int(present.any((1, 2)).sum()),
        }
        results.append(result)
        lines.append(
            f"episode {i} (level {result['level_seed']}, {len(rows)} frames): latent {latent} vs {object_class}: "
            f"F1 {f1:.2f} (precision {result['precision']:.2f}, recall {result['recall']:.2f}) -> {gif}"
        )
    (out / "tracking.json").write_text(
        json.dumps(
            {"sae": str(sae_dir), "latent": latent, "object": object_class, "episodes": results}, indent=2
        )
    )
    return lines
