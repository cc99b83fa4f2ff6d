"""Object tracking with an SAE latent: its spatial map over every frame of an episode, drawn over the frames (an
animated GIF and a strip per episode), scored against the ground-truth mask of an object class."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from jaxinterp.atomic import write_text
from jaxinterp.envs.dataset import Dataset
from jaxinterp.envs.ground_truth import OBJECT_CLASSES
from jaxinterp.envs.heist import HeistConfig
from jaxinterp.envs.rollout import agent_policy, collect
from jaxinterp.errors import JaxinterpError
from jaxinterp.models.agent import Agent
from jaxinterp.models.receptive import ReceptiveField, receptive_field, upsample
from jaxinterp.render import overlay, save_gif, save_png
from jaxinterp.sae import metrics
from jaxinterp.sae.files import SAE
from jaxinterp.sae.runs import EVAL_FILE, load_member

__all__ = ["CANDIDATES", "choose_latent", "render", "strip", "track_episodes"]

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


def strip(frames: np.ndarray) -> np.ndarray:
    """`STRIP_FRAMES` frames evenly spaced over the episode, side by side with `GAP` white pixels between them."""
    pick = np.unique(np.linspace(0, len(frames) - 1, min(STRIP_FRAMES, len(frames))).round().astype(int))
    gap = np.full((frames.shape[1], GAP, 3), 255, np.uint8)
    return np.concatenate([x for f in frames[pick] for x in (f, gap)][:-1], axis=1)


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
    data = collect(
        out / "data",
        frames=envs * max_steps,
        policy=agent_policy(agent),
        env_config=HeistConfig(num_envs=envs, start_level=seed, seed=seed),
        seed=seed,
        progress=progress,
    )
    cls = OBJECT_CLASSES.index(object_class)
    rf = receptive_field(agent, sae.layer)
    lines, results = [], []
    for i, (level_seed, rows) in enumerate(_most_seen(data, envs, cls, max_steps)[:episodes]):
        result = {
            "episode": i,
            "level_seed": level_seed,
            **_track(agent, sae, data, rows, latent, cls, rf, out, i),
        }
        results.append(result)
        lines.append(
            f"episode {i} (level {level_seed}, {len(rows)} frames): latent {latent} vs {object_class}: "
            f"F1 {result['f1']:.2f} (precision {result['precision']:.2f}, recall {result['recall']:.2f}) -> "
            f"{out / f'episode_{i}.gif'}"
        )
    summary = {"sae": str(sae_dir), "latent": latent, "object": object_class, "episodes": results}
    write_text(out / "tracking.json", json.dumps(summary, indent=2))
    return lines


def _most_seen(data: Dataset, envs: int, cls: int, max_steps: int) -> list[tuple[int, np.ndarray]]:
    """(level seed, rows) of each env's first episode, cut at ``max_steps`` rows: those where object class ``cls``
    is in the most frames first (ties in env order)."""
    table = data.episodes()
    found = []
    for env in range(envs):
        first = (table.env == env) & (table.first_step == 0)
        rows = data.episode_rows(int(table.episode_id[first][0]))[:max_steps]
        shows = int((data.get(rows, fields=["objects"])["objects"] == cls).any((1, 2)).sum())
        found.append((-shows, env, int(table.level_seed[first][0]), rows))
    return [(level_seed, rows) for _, _, level_seed, rows in sorted(found, key=lambda c: c[:2])]


def _track(
    agent: Agent,
    sae: SAE,
    data: Dataset,
    rows: np.ndarray,
    latent: int,
    cls: int,
    rf: ReceptiveField,
    out: Path,
    i: int,
) -> dict:
    """Episode ``i``'s GIF and strip of the latent's map over the frames ``rows``, and its scores against class
    ``cls``."""
    got = data.get(rows, fields=["frames", "objects"])
    acts = np.asarray(agent.activations(got["frames"], [sae.layer])[sae.layer])
    z = metrics.encode_in_batches(sae, acts.reshape(-1, sae.d_in)).reshape(*acts.shape[:3], -1)[..., latent]
    present = metrics.objects_present(got["objects"], *acts.shape[1:3])[..., cls]
    scores = metrics.object_scores(z.reshape(-1, 1), present.reshape(-1, 1))
    frames = render(got["frames"], upsample(np.maximum(z, 0), rf), got["objects"] == cls)
    save_gif(out / f"episode_{i}.gif", frames, ms=GIF_MS)
    save_png(out / f"episode_{i}_strip.png", strip(frames))
    return {
        "frames": len(rows),
        "f1": float(scores.f1[0, 0]),
        "precision": float(scores.precision[0, 0]),
        "recall": float(scores.recall[0, 0]),
        "object_frames": int(present.any((1, 2)).sum()),
    }
