"""``jaxinterp sae …``: train, evaluate, track, visualize, export and import sparse autoencoders."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from jaxinterp.cli.common import (
    add_checkpoint_arg,
    add_seed_arg,
    checkpoint,
    given,
    load,
    parse_config,
)
from jaxinterp.errors import JaxinterpError

if TYPE_CHECKING:
    from jaxinterp.envs.dataset import Dataset
    from jaxinterp.models.agent import Agent

__all__ = [
    "DEFAULT_ENVS",
    "DEFAULT_FRAMES",
    "FEATURE_STEPS",
    "add_parsers",
    "cmd_eval",
    "cmd_export",
    "cmd_features",
    "cmd_import",
    "cmd_track",
    "cmd_train",
]

DEFAULT_FRAMES = 65536
"""Frames recorded when no --dataset is given: 4M samples at the last stage (8x8 positions)."""
DEFAULT_ENVS = 256
"""Envs of that recording: 256 x 256 steps held 412 episodes (41 held out, 5,830 frames); 64 x 256 steps held 93
(9 held out), too few levels to score objects on."""
FEATURE_STEPS = 256
"""Optimization steps of each latent's feature visualization in ``sae features``."""


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``jaxinterp sae <train|eval|finetune|track|features|export|import>`` on the top-level subparsers."""
    sae = sub.add_parser(
        "sae",
        help="sparse autoencoders: train (sweeps in one jitted step), eval, finetune, track, export, import",
    )
    group = sae.add_subparsers(dest="sae_command", required=True)
    for add in (_add_train, _add_eval, _add_finetune, _add_track, _add_features, _add_export, _add_import):
        add(group)


def _dataset(dataset: str | None, agent: Agent, out: Path, frames: int | None = None) -> Dataset:
    """``--dataset``; else, when training, the agent's own play on unbounded easy levels recorded once under
    ``out/data`` (resumable); else that recording if it exists."""
    from jaxinterp.envs.dataset import META_FILE, Dataset
    from jaxinterp.envs.heist import HeistConfig
    from jaxinterp.envs.rollout import agent_policy, collect
    from jaxinterp.sae.runs import DATASET_FILE

    if dataset:
        return Dataset(dataset)
    if frames:
        config = HeistConfig(num_envs=DEFAULT_ENVS)
        return collect(
            out / "data", frames=frames, policy=agent_policy(agent), env_config=config, seed=config.seed
        )
    if (out / "data" / META_FILE).exists():
        return Dataset(out / "data")
    if (out / DATASET_FILE).exists():  # a sweep trained on a --dataset
        return Dataset(json.loads((out / DATASET_FILE).read_text())["dataset"])
    raise JaxinterpError(f"no dataset for {out}: pass --dataset (a `jaxinterp rollout` directory)")


def _add_train(group) -> None:
    t = group.add_parser(
        "train", help="train an SAE (or a sweep) on a layer; exports SAELens files and evaluates"
    )
    t.add_argument(
        "--layer", help="layer to read (default: jaxinterp.api.DEFAULT_LAYER, the IMPALA CNN's last stage)"
    )
    t.add_argument("--dataset", help="rollout dataset (default: record the agent's own play under OUT/data)")
    t.add_argument(
        "--frames", type=int, help=f"frames to record without --dataset (default {DEFAULT_FRAMES})"
    )
    t.add_argument("--arch", help="topk (default), batchtopk, matryoshka, jumprelu or relu")
    t.add_argument(
        "--k",
        type=int,
        help="active latents per position (topk, batchtopk, matryoshka; jumprelu's target L0)",
    )
    t.add_argument("--width", type=int, help="latents (d_sae); default: the library's, SAEConfig.width")
    t.add_argument("--sparsity-coef", type=float, help="L1 (relu) or L0 (jumprelu) coefficient")
    t.add_argument("--lr", type=float, help="Adam learning rate (default 0.001)")
    t.add_argument("--steps", type=int, help="optimizer steps (default 3000)")
    t.add_argument("--batch-size", type=int, help="activation vectors per step (default 2048)")
    t.add_argument(
        "--sweep", help='a grid trained in one program, e.g. "k=4,8,16 arch=topk,jumprelu seed=0,1"'
    )
    t.add_argument("--config", help="other SAEConfig fields as key=value,... (e.g. dead_samples=500000)")
    add_seed_arg(t, help="seed of the data order (members have their own seed)")
    t.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation after training")
    t.add_argument("--out", default="sae", help="sweep directory (default sae/); rerun to resume")
    add_checkpoint_arg(t)
    t.set_defaults(func=cmd_train)


def cmd_train(args) -> None:
    from jaxinterp.api import DEFAULT_LAYER
    from jaxinterp.sae.config import SAEConfig, parse_sweep
    from jaxinterp.sae.runs import EVAL_FILE, format_summary, train_saes

    agent = load(args.checkpoint)
    layer = agent.check_layers([args.layer or DEFAULT_LAYER])[0]
    options = given(arch=args.arch, k=args.k, width=args.width, sparsity_coef=args.sparsity_coef, lr=args.lr)
    base = {
        "d_in": agent.layer_shapes[layer][-1],
        **options,
        **given(steps=args.steps, batch_size=args.batch_size),
        **parse_config(args.config),
    }
    configs = [SAEConfig.from_dict(base | point) for point in (parse_sweep(args.sweep) or [{}])]
    out = Path(args.out)
    dataset = _dataset(args.dataset, agent, out, frames=args.frames or DEFAULT_FRAMES)
    dirs = train_saes(agent, dataset, layer, configs, out, data_seed=args.seed, evaluate=not args.no_eval)
    if not args.no_eval:
        print(format_summary([json.loads((d / EVAL_FILE).read_text()) for d in dirs]))
    print(f"wrote {len(dirs)} SAE(s) to {out} (SAELens layout: cfg.json, sae_weights.safetensors)")


def _add_eval(group) -> None:
    e = group.add_parser("eval", help="held-out reconstruction, policy fidelity and object scores of SAE(s)")
    e.add_argument("--sae", required=True, help="an SAE directory or a sweep directory")
    e.add_argument("--dataset", help="rollout dataset (default: the sweep's own data/)")
    e.add_argument(
        "--episodes", type=int, help="also play this many unseen levels with each SAE spliced in, and clean"
    )
    add_checkpoint_arg(e)
    e.set_defaults(func=cmd_eval)


def cmd_eval(args) -> None:
    from jaxinterp.sae.runs import evaluate_saes, format_summary, member_dirs

    agent = load(args.checkpoint)
    dirs = member_dirs(args.sae)
    sweep_dir = dirs[0].parent
    dataset = _dataset(args.dataset, agent, sweep_dir)
    summary = evaluate_saes(agent, dataset, dirs, cache_dir=sweep_dir, **given(episodes=args.episodes))
    print(format_summary(summary))


def _add_finetune(group) -> None:
    from jaxinterp.sae.finetune import AUX_COEF, FINETUNE_LR, FINETUNE_STEPS, MSE_COEF

    f = group.add_parser(
        "finetune", help="train a TopK SAE further so that the agent acts the same with it spliced in"
    )
    f.add_argument("--sae", required=True, help="one TopK SAE directory (a sweep's member)")
    f.add_argument("--dataset", help="rollout dataset (default: the sweep's own data/)")
    f.add_argument("--steps", type=int, help=f"steps of 64 frames (default {FINETUNE_STEPS})")
    f.add_argument("--lr", type=float, help=f"Adam's learning rate (default {FINETUNE_LR})")
    f.add_argument(
        "--mse-coef", type=float, help=f"weight of the FVU beside the policy KL (default {MSE_COEF})"
    )
    f.add_argument(
        "--aux-coef", type=float, help=f"weight of AuxK, which revives dead latents (default {AUX_COEF:g})"
    )
    add_seed_arg(f, help="seed of the frames' order")
    f.add_argument("--out", help="the new SAE's directory (default: the SAE's, with -policy appended)")
    add_checkpoint_arg(f)
    f.set_defaults(func=cmd_finetune)


def cmd_finetune(args) -> None:
    from jaxinterp.sae.files import save_sae
    from jaxinterp.sae.finetune import finetune_for_policy
    from jaxinterp.sae.runs import activation_source, evaluate_saes, format_summary, load_member, member_dirs

    agent = load(args.checkpoint)
    dirs = member_dirs(args.sae)
    if len(dirs) != 1:
        raise JaxinterpError(f"--sae names {len(dirs)} SAEs; fine-tune one member directory at a time")
    sae = load_member(dirs[0], agent)
    sweep_dir = dirs[0].parent
    dataset = _dataset(args.dataset, agent, sweep_dir)
    source = activation_source(agent, dataset, sae.layer, sweep_dir)
    options = given(steps=args.steps, lr=args.lr, mse_coef=args.mse_coef, aux_coef=args.aux_coef)
    tuned = finetune_for_policy(agent, sae, source, seed=args.seed, **options)
    out = Path(args.out) if args.out else dirs[0].with_name(dirs[0].name + "-policy")
    save_sae(tuned, out)
    print(format_summary(evaluate_saes(agent, dataset, [out], source=source)))
    print(f"wrote {out} (SAELens layout)")


def _add_track(group) -> None:
    k = group.add_parser("track", help="a latent's map over an episode's frames, as GIFs and strips, with F1")
    k.add_argument("--sae", required=True, help="an SAE directory")
    k.add_argument("--latent", type=int, help="latent index (default: the best latent for --object)")
    k.add_argument("--object", help="object class to score against (default: the latent's best class)")
    k.add_argument("--episodes", type=int, help="episodes to play and draw (default 2)")
    k.add_argument("--max-steps", type=int, help="frames per episode at most")
    add_seed_arg(k, help="seed of the levels played")
    k.add_argument("--out", required=True, help="output directory: GIFs, strips and tracking.json")
    add_checkpoint_arg(k)
    k.set_defaults(func=cmd_track)


def cmd_track(args) -> None:
    from jaxinterp.sae.track import track_episodes

    agent = load(args.checkpoint)
    written = track_episodes(
        agent,
        args.sae,
        out_dir=args.out,
        latent=args.latent,
        object_class=args.object,
        seed=args.seed,
        **given(episodes=args.episodes, max_steps=args.max_steps),
    )
    for line in written:
        print(line)


def _add_features(group) -> None:
    f = group.add_parser(
        "features", help="feature visualization (every latent in one call) and dataset examples"
    )
    f.add_argument("--sae", required=True, help="an SAE directory (in a sweep directory with its data/)")
    f.add_argument("--latents", default="all", help="all | 3 | 0-15 | 1,4,9")
    f.add_argument(
        "--where", default="centre", choices=("centre", "mean"), help="the latent at the centre or mean"
    )
    f.add_argument(
        "--steps", type=int, default=FEATURE_STEPS, help=f"optimization steps (default {FEATURE_STEPS})"
    )
    f.add_argument("--k", type=int, help="dataset examples per latent")
    f.add_argument("--dataset", help="rollout dataset (default: the sweep's own data/)")
    f.add_argument("--out", required=True, help="output directory: featviz/ and examples/")
    add_checkpoint_arg(f)
    f.set_defaults(func=cmd_features)


def cmd_features(args) -> None:
    from jaxinterp.api import color_stats
    from jaxinterp.examples.find import find_examples
    from jaxinterp.models.agent import parse_channels
    from jaxinterp.report.agent_report import REAL_FRAMES
    from jaxinterp.report.example_sheets import write_sheets
    from jaxinterp.report.visualizations import FeatvizSettings, visualize_layers
    from jaxinterp.sae.features import latent_feature, latent_objective
    from jaxinterp.sae.runs import load_member

    weights = checkpoint(args.checkpoint)
    agent = load(weights)
    sae = load_member(args.sae, agent)
    latents = parse_channels(args.latents, sae.d_sae, "the SAE")
    out = Path(args.out)
    dataset = _dataset(args.dataset, agent, Path(args.sae).parent)
    frames = dataset.evenly_spaced(REAL_FRAMES)[
        "frames"
    ]  # for colour statistics and the real-frame percentiles
    settings = FeatvizSettings(
        objective=lambda layer: latent_objective(sae, args.where),
        steps=args.steps,
        color_matrix=color_stats(agent, weights, frames=frames).matrix,
    )
    visualize_layers(agent, [sae.layer], latents, settings, out_dir=out / "featviz", real_frames=frames)
    result = find_examples(agent, latent_feature(sae, latents), dataset, progress=True, **given(k=args.k))
    paths = write_sheets(result, out / "examples", object_maps=dataset)
    print(f"wrote {out / 'featviz'} and {len(paths)} example sheets to {out / 'examples'}")


def _add_export(group) -> None:
    x = group.add_parser("export", help="copy SAE(s) out of a sweep directory in SAELens' layout")
    x.add_argument("--sae", required=True, help="an SAE directory or a sweep directory")
    x.add_argument("--out", required=True, help="destination directory (one folder per SAE for a sweep)")
    x.set_defaults(func=cmd_export)


def cmd_export(args) -> None:
    from jaxinterp.sae.runs import member_dirs

    out = Path(args.out)
    members = member_dirs(args.sae)
    for d in members:
        target = out / d.name if len(members) > 1 else out
        target.mkdir(parents=True, exist_ok=True)
        for f in ("cfg.json", "sae_weights.safetensors", "sparsity.safetensors"):
            if (d / f).exists():
                shutil.copy2(d / f, target / f)
        print(f"exported {d} -> {target}")


def _add_import(group) -> None:
    m = group.add_parser(
        "import", help="read an SAE in SAELens' layout (yours or SAELens'), check it, save it here"
    )
    m.add_argument("source", help="directory with cfg.json and sae_weights.safetensors")
    m.add_argument("--layer", help="the agent layer it reads (default: cfg.json's metadata.hook_name)")
    m.add_argument("--out", required=True, help="SAE directory to write")
    add_checkpoint_arg(m)
    m.set_defaults(func=cmd_import)


def cmd_import(args) -> None:
    from jaxinterp.sae.files import save_sae
    from jaxinterp.sae.runs import load_member

    agent = load(args.checkpoint)
    sae = load_member(args.source, agent, args.layer)
    save_sae(sae, args.out)
    print(f"imported {args.source} ({sae.arch}, {sae.d_in} -> {sae.d_sae}, layer {sae.layer}) -> {args.out}")
