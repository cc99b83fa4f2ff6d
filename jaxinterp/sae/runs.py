"""A sweep directory on disk: train SAEs on an agent's layer, export every member in SAELens' layout, evaluate.

Layout of ``out/``::

    sweep.json, metrics.jsonl, checkpoint/    the training run (`train.train_sweep`), resumable
    dataset.json                              the rollout dataset the samples came from
    activations/<layer>.npy                   the layer's activations over the dataset (memory-mapped)
    <member name>/                            cfg.json, sae_weights.safetensors, sparsity.safetensors, eval.json
    summary.json, frontier.png                every member's held-out metrics; L0 against FVU
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxinterp.envs.dataset import Dataset
from jaxinterp.errors import JaxinterpError
from jaxinterp.models.agent import Agent
from jaxinterp.sae import metrics
from jaxinterp.sae.config import SAEConfig
from jaxinterp.sae.data import ActivationSource, evenly
from jaxinterp.sae.files import CFG_FILE, SAE, from_training, load_sae, save_sae
from jaxinterp.sae.train import train_sweep

__all__ = [
    "DATASET_FILE",
    "EVAL_FILE",
    "EVAL_FRAMES",
    "EVAL_SAMPLES",
    "SCORED_POSITIONS",
    "SUMMARY_FILE",
    "activation_source",
    "evaluate_saes",
    "format_summary",
    "load_member",
    "member_dirs",
    "plot_frontier",
    "train_saes",
]

EVAL_SAMPLES = 65536  # held-out samples for the reconstruction metrics
EVAL_FRAMES = 4096  # held-out frames (evenly spaced) for policy fidelity and object scores
SCORED_POSITIONS = 262_144
"""Positions per split for object scores and probes (4,096 frames of an 8 x 8 layer, 1,024 of a 16 x 16 one): a
16 x 16 layer's 4,096 frames made 1M positions x 256 latents per split, and the probes minutes of work."""
SUMMARY_FILE = "summary.json"
DATASET_FILE = "dataset.json"  # where the sweep's samples came from: `sae eval` reads the same dataset
EVAL_FILE = "eval.json"


def activation_source(
    agent: Agent, dataset: Dataset, layer: str, out: Path, progress: bool = True
) -> ActivationSource:
    stem = "act_" + "".join(c if c.isalnum() else "_" for c in layer)
    return ActivationSource.from_dataset(
        agent, dataset, layer, out / "activations" / f"{stem}.npy", progress=progress
    )


def train_saes(
    agent: Agent,
    dataset: Dataset,
    layer: str,
    configs: Sequence[SAEConfig],
    out_dir: str | os.PathLike,
    *,
    model_name: str = "",
    data_seed: int = 0,
    progress: bool = True,
    evaluate: bool = True,
) -> list[Path]:
    """Train ``configs`` on ``layer`` over ``dataset``, export each member to ``out_dir/<name>/`` and (with
    ``evaluate``) write its held-out metrics; returns the member directories in config order."""
    out = Path(out_dir)
    names = [c.name() for c in configs]
    if len(set(names)) < len(names):
        raise JaxinterpError(
            f"two SAEs of the sweep have the same settings: {min(n for n in names if names.count(n) > 1)}"
        )
    source = activation_source(agent, dataset, layer, out, progress)
    (out / DATASET_FILE).write_text(json.dumps({"dataset": str(Path(dataset.path).resolve())}))
    result = train_sweep(configs, source, out, data_seed=data_seed, progress=progress)
    model_name = model_name or f"jaxinterp/{agent.arch.name}/{agent.params_digest()}"
    dirs = []
    for name, config, params in zip(names, result.configs, result.params, strict=True):
        sae = from_training(config, params, result.scale, layer=layer, model_name=model_name)
        dirs.append(save_sae(sae, out / name))
    if evaluate:
        evaluate_saes(agent, dataset, dirs, source=source, progress=progress)
    return dirs


def member_dirs(path: str | os.PathLike) -> list[Path]:
    """An SAE directory, or every SAE directory directly inside a sweep directory."""
    path = Path(path)
    if (path / CFG_FILE).is_file():
        return [path]
    found = sorted(p.parent for p in path.glob(f"*/{CFG_FILE}"))
    if not found:
        raise JaxinterpError(f"no SAE in {path}: expected {CFG_FILE} there or in its subdirectories")
    return found


def evaluate_saes(
    agent: Agent,
    dataset: Dataset,
    dirs: Sequence[Path],
    *,
    source: ActivationSource | None = None,
    cache_dir: Path | None = None,
    episodes: int = 0,
    progress: bool = True,
) -> list[dict]:
    """Held-out metrics of each SAE directory (all on one layer): reconstruction, policy fidelity and object scores
    next to the raw channels', and with ``episodes`` > 0 that many unseen-level episodes played with each SAE spliced
    in beside the clean agent. Writes ``eval.json`` in each and ``summary.json`` + ``frontier.png`` beside them."""
    saes = [load_member(d, agent) for d in dirs]
    layers = {s.layer for s in saes}
    if len(layers) != 1:
        raise JaxinterpError(f"evaluate SAEs of one layer at a time; these read {sorted(layers)}")
    (layer,) = layers
    if source is None:
        source = activation_source(agent, dataset, layer, cache_dir or Path(dirs[0]).parent, progress)
    x, _ = source.sample(EVAL_SAMPLES, heldout=True)
    frames_idx = evenly(source.heldout_frames, EVAL_FRAMES)
    frames = dataset.get(frames_idx, fields=["frames"])["frames"]
    train_idx = evenly(source.train_frames, EVAL_FRAMES)
    scored = max(1, SCORED_POSITIONS // source.positions)  # frames for object scores and probes
    mean_act = np.asarray(source.acts[train_idx]).mean(0)  # for mean ablation
    # Object scores: the best latent (channel, with its threshold) per class is chosen on training frames and
    # scored on held-out ones; choosing and scoring on the same frames favoured whichever of 256 latents happened
    # to coincide with an object in a few held-out levels (F1 0.59 there, 0.003 on training frames).
    splits = {
        name: _objects_and_acts(dataset, source, evenly(idx, scored))
        for name, idx in (("train", train_idx), ("heldout", frames_idx))
    }
    (p_tr, a_tr), (p_ho, a_ho) = splits["train"], splits["heldout"]
    channels = metrics.choose_and_score(p_tr, a_tr, p_ho, a_ho, thresholds=metrics.channel_thresholds)
    channel_probes = _probes(p_tr, a_tr, p_ho, a_ho)
    channel_absorption = metrics.absorption(p_tr, a_tr, p_ho, a_ho, thresholds=metrics.channel_thresholds)
    summary = []
    for d, sae in zip(dirs, saes, strict=True):
        rec = metrics.reconstruction(sae, x)
        freq = rec.pop("log10_frequency")
        fid = metrics.policy_fidelity(agent, sae, frames, mean_act)
        if episodes > 0:
            fid["episodes"] = metrics.spliced_episodes(agent, sae, episodes, progress=progress)
        z_tr, z_ho = metrics.encode_in_batches(sae, a_tr), metrics.encode_in_batches(sae, a_ho)
        latents = metrics.choose_and_score(p_tr, z_tr, p_ho, z_ho)
        result = {
            "sae": str(d),
            "layer": layer,
            "architecture": sae.cfg.get("architecture"),
            "trained_as": trained_arch(sae),
            "d_sae": sae.d_sae,
            "reconstruction": rec,
            "policy": fid,
            "objects": {
                c: {"latent": lat, "latent_f1": lf1, "channel": ch, "channel_f1": cf1}
                for c, (lat, lf1), (ch, cf1) in zip(metrics.OBJECT_CLASSES, latents, channels, strict=True)
            },
            "probes": {
                "k": list(metrics.PROBE_K),
                "latents": _probes(p_tr, z_tr, p_ho, z_ho),
                "channels": channel_probes,
            },
            "absorption": {
                "latents": metrics.absorption(p_tr, z_tr, p_ho, z_ho),
                "channels": channel_absorption,
            },
        }
        (Path(d) / EVAL_FILE).write_text(json.dumps(result, indent=2))
        save_sae(sae, d, log10_frequency=freq)
        summary.append(result)
    out = Path(dirs[0]).parent
    if len(dirs) > 1:
        (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
        plot_frontier(summary, out / "frontier.png")
    return summary


def trained_arch(sae: SAE) -> str:
    """How an SAE was trained (`config.ARCHITECTURES`; a BatchTopK SAE is stored as SAELens' ``jumprelu``), or
    SAELens' architecture name for one trained elsewhere."""
    return sae.cfg.get("jaxinterp", {}).get("config", {}).get("arch") or sae.cfg.get(
        "architecture", "standard"
    )


def frontier_groups(summary: Sequence[dict]) -> dict[str, list[tuple[float, float]]]:
    """(L0, FVU) of the members of a sweep's summary, per training architecture."""
    groups: dict[str, list[tuple[float, float]]] = {}
    for s in summary:
        groups.setdefault(s["trained_as"], []).append((s["reconstruction"]["l0"], s["reconstruction"]["fvu"]))
    return dict(sorted(groups.items()))


def plot_frontier(summary: Sequence[dict], path: Path) -> None:
    """L0 against FVU of every member, one marker per architecture: the sweep's sparsity-fidelity frontier."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for arch, pts in frontier_groups(summary).items():
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], label=arch)
    ax.set_xlabel("L0 (active latents per position)")
    ax.set_ylabel("FVU (held-out, pooled)")
    ax.set_yscale("log")
    ax.set_title(summary[0]["layer"])
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _probes(p_tr, v_tr, p_ho, v_ho) -> dict[str, list[float]]:
    """Held-out F1 of k-sparse probes (k in `metrics.PROBE_K`) for every class seen in both splits and missing from
    some training position (a class everywhere leaves the probe nothing to separate)."""
    return {
        c: [metrics.sparse_probe(v_tr, p_tr[:, j], v_ho, p_ho[:, j], k) for k in metrics.PROBE_K]
        for j, c in enumerate(metrics.OBJECT_CLASSES)
        if p_tr[:, j].any() and not p_tr[:, j].all() and p_ho[:, j].any()
    }


def _objects_and_acts(
    dataset: Dataset, source: ActivationSource, idx: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(objects present (S, K), activations (S, C)) of frames ``idx``, one row per position."""
    objects = dataset.get(idx, fields=["objects"])["objects"]
    present = metrics.objects_present(objects, source.height, source.width)
    return present.reshape(-1, present.shape[-1]), np.asarray(source.acts[idx], np.float32).reshape(
        -1, source.d_in
    )


def format_summary(summary: Sequence[dict]) -> str:
    """One line per SAE: L0, FVU, dead and dense fractions, action and move agreement, KL score, the mean absorbed
    fraction over the key and lock colours (`metrics.absorption`), and success with the SAE spliced in (clean) when
    episodes were played."""
    lines = [
        (
            f"{'sae':<40} {'L0':>6} {'FVU':>7} {'dead':>6} {'dense':>6} {'action':>7} {'move':>7} {'KL score':>8}"
            f" {'absorbed':>8} {'success (clean)':>16}"
        )
    ]
    for s in summary:
        r, p = s["reconstruction"], s["policy"]
        played = p.get("episodes")
        success = (
            f"{played['spliced']['success_rate']:.1%} ({played['clean']['success_rate']:.1%})"
            if played
            else "-"
        )
        absorbed = [
            c["absorbed"]
            for parent in s.get("absorption", {}).get("latents", {}).values()
            for c in parent["children"].values()
            if c["absorbed"] == c["absorbed"]  # not NaN: the colour occurs in the held-out frames
        ]
        mean_absorbed = f"{np.mean(absorbed):8.3f}" if absorbed else f"{'-':>8}"
        lines.append(
            f"{Path(s['sae']).name:<40} {r['l0']:6.2f} {r['fvu']:7.4f} {r['dead_fraction']:6.1%} "
            f"{r['dense_fraction']:6.1%} {p['action_agreement']:7.1%} {p['move_agreement']:7.1%} "
            f"{p['kl_score_zero']:8.3f} {mean_absorbed} {success:>16}"
        )
    return "\n".join(lines)


def load_member(path: str | os.PathLike, agent: Agent, layer: str | None = None) -> SAE:
    """An SAE checked against ``agent``: its layer (``layer``, else cfg.json's hook name) exists and has d_in channels."""
    sae = load_sae(path)
    if layer is not None:
        sae.cfg.setdefault("metadata", {})["hook_name"] = layer
        sae = sae._replace(layer=layer)
    (layer,) = agent.check_layers([sae.layer])
    if sae.d_in != agent.layer_shapes[layer][-1]:
        raise JaxinterpError(
            f"{path}: the SAE reads d_in={sae.d_in} channels but {layer} has {agent.layer_shapes[layer][-1]} channels"
        )
    return sae
