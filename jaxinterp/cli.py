"""The ``jaxinterp`` command line: one entry point, one subcommand per job. Errors print as one line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from jaxinterp.cli_sae import add_commands as add_sae_commands
from jaxinterp.errors import JaxinterpError

if TYPE_CHECKING:
    from jaxinterp.models.agent import Agent


def _parse_config(text: str | None) -> dict:
    """``--config``: a JSON file, or inline ``key=value,key=value`` (values parsed as JSON where they can be)."""
    if not text:
        return {}
    if Path(text).is_file():
        return json.loads(Path(text).read_text())
    out = {}
    for item in text.split(","):
        if "=" not in item:
            raise JaxinterpError(f"--config expects a JSON file or key=value pairs, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def cmd_train_agent(args) -> None:
    from jaxinterp.rl.ppo import PPOConfig
    from jaxinterp.rl.train import train

    fields = _parse_config(args.config) | ({"arch": args.arch} if args.arch else {})
    state = train(
        PPOConfig.from_dict(fields),
        args.out,
        frames=args.frames,
        seed=args.seed,
        checkpoint_every_s=args.checkpoint_every,
        init_from=args.init_from,
    )
    print(f"{int(state.frames):,} frames trained; checkpoints in {Path(args.out) / 'checkpoints'}")


def _load(path) -> Agent:
    """An agent from weights (a file or a saved orbax directory) or a training run directory (its latest policy)."""
    from jaxinterp.weights.store import load_agent

    return load_agent(path)


def _agent(args) -> Agent:
    from jaxinterp.weights.store import default_checkpoint

    return _load(args.checkpoint or default_checkpoint())


def cmd_info(args) -> None:
    from jaxinterp.weights.store import default_checkpoint

    path = args.file or default_checkpoint()
    agent = _load(path)
    print(f"{path}\narchitecture: {agent.arch.name} ({agent.arch.description})")
    print(
        f"actions: {agent.num_actions}\nparameters: {agent.num_params:,}\nlayers ({len(agent.layer_shapes)}):"
    )
    width = max(map(len, agent.layer_shapes))
    for name, shape in agent.layer_shapes.items():
        print(f"  {name:<{width}}  {' x '.join(map(str, shape))}")


def cmd_convert(args) -> None:
    from jaxinterp.weights.store import save_agent

    agent = _load(args.input)
    out = save_agent(agent, args.output)
    print(f"wrote {out} ({agent.arch.name}, {agent.num_params:,} parameters)")


def cmd_rollout(args) -> None:
    from jaxinterp.envs.heist import HeistConfig
    from jaxinterp.envs.rollout import agent_policy, collect, random_policy

    layers = [x for x in (args.layers or "").split(",") if x]
    if args.random:
        if layers:
            raise JaxinterpError("--layers needs an agent; drop --random or --layers")
        policy = random_policy()
    else:
        policy = agent_policy(_agent(args), greedy=args.greedy, layers=layers)
    config = HeistConfig(args.num_envs, args.distribution_mode, args.num_levels, args.start_level, args.seed)
    collect(args.out, frames=args.frames, policy=policy, env_config=config, seed=args.seed, layers=layers)


def cmd_evaluate(args) -> None:
    from jaxinterp.rl.evaluate import evaluate

    agent = _agent(args)
    results = evaluate(agent, episodes=args.episodes, levels=args.levels, seed=args.seed, greedy=args.greedy)
    for name, ev in results.items():
        print(f"{name:>6}: {ev}")
    if args.json:
        Path(args.json).write_text(json.dumps({k: v.to_dict() for k, v in results.items()}, indent=2))


def cmd_export_agent(args) -> None:
    from jaxinterp.rl.export import export_agent

    card = export_agent(args.run_dir, args.out, episodes=args.episodes, seed=args.seed)
    e = card["evaluation"]
    print(
        f"exported {card['frames_trained']:,}-frame agent to {args.out}.*: success {e['agent']['success_rate']:.1%}"
        f" (random {e['random']['success_rate']:.1%}) on {e['episodes']} unseen episodes"
    )


def _channels(agent, layer: str, spec: str | None) -> list[int] | None:
    from jaxinterp.models.agent import parse_channels

    layer = agent.check_layers([layer])[0]
    return None if spec in (None, "all") else parse_channels(spec, agent.layer_shapes[layer][-1], repr(layer))


def cmd_examples(args) -> None:
    from jaxinterp.envs.dataset import Dataset
    from jaxinterp.examples.find import find_examples
    from jaxinterp.report.example_sheets import write_sheets

    agent = _agent(args)
    dataset = Dataset(args.dataset)
    out = Path(args.out)
    if args.spatial and agent.check_layers([args.layer])[0] not in agent.conv_layer_names:
        raise JaxinterpError(
            f"--spatial needs positions; {args.layer} is a dense layer: use one of {', '.join(agent.conv_layer_names)}"
        )
    if args.nmf:
        from jaxinterp.examples import nmf
        from jaxinterp.render import file_stem

        if args.channels != "all":
            raise JaxinterpError("--nmf finds its own directions of the layer: leave out --channels")
        frames = dataset.evenly_spaced(nmf.FIT_FRAMES)["frames"]
        dirs = nmf.fit_directions(agent, args.layer, frames, args.nmf, seed=args.seed)
        out = out / "nmf"  # direction i's sheets would otherwise overwrite channel i's
        nmf.save_npz(dirs, out / f"{file_stem(dirs.layer)}_nmf.npz")
        print(nmf.describe(dirs))
        feature, channels = dirs.feature(), None
    else:
        feature, channels = args.layer, _channels(agent, args.layer, args.channels)
    result = find_examples(
        agent,
        feature,
        dataset,
        channels=channels,
        k=args.k,
        diversity=args.diversity,
        diversity_on=args.diversity_on,
        progress=True,
    )
    paths = write_sheets(result, out, object_maps=dataset)  # names the game object under every patch
    if args.spatial:
        from tqdm import tqdm

        from jaxinterp.examples.spatial import spatial_examples
        from jaxinterp.report.example_sheets import write_spatial

        with tqdm(total=len(dataset), unit="frame", desc=f"spatial {args.layer}") as bar:
            mosaics = spatial_examples(agent, feature, dataset, channels=channels, progress=bar.update)
        paths += write_spatial(mosaics, out, reuse=args.reuse)
    print(f"wrote {len(paths)} files to {out} ({result.num_frames:,} frames scanned)")


def cmd_objects(args) -> None:
    from tqdm import tqdm

    from jaxinterp.envs.dataset import Dataset
    from jaxinterp.examples.object_response import object_response
    from jaxinterp.render import save_png
    from jaxinterp.report.object_tables import object_maps_sheet, object_table, write_object_response

    agent = _agent(args)
    channels = _channels(agent, args.layer, args.channels)
    dataset = Dataset(args.dataset)
    with tqdm(total=len(dataset), unit="frame", desc=f"objects {args.layer}") as bar:
        result = object_response(agent, args.layer, dataset, channels=channels, progress=bar.update)
    paths = write_object_response(result, args.out)
    sample = np.linspace(0, len(dataset) - 1, 8).astype(np.int64)  # 8 frames across the dataset, as a check
    rows = dataset.get(sample, ["frames", "objects"])
    paths.append(
        save_png(Path(args.out) / "object_maps.png", object_maps_sheet(rows["frames"], rows["objects"]))
    )
    print(object_table(result), end="")
    print(f"wrote {', '.join(p.name for p in paths)} to {args.out}")


def cmd_attribution(args) -> None:
    from jaxinterp.envs.dataset import Dataset
    from jaxinterp.examples.attribution import gradient_x_activation, integrated_gradients
    from jaxinterp.report.overlays import write_saliency

    agent = _agent(args)
    ds = Dataset(args.dataset)
    index = [int(i) for i in args.frames.split(",")]
    if any(not 0 <= i < len(ds) for i in index):
        raise JaxinterpError(f"--frames must be row numbers in 0-{len(ds) - 1} of {args.dataset}")
    frames = ds[np.asarray(index)]["frames"]
    target = "value" if args.target == "value" else int(args.target.removeprefix("action:"))
    method = integrated_gradients if args.method == "ig" else gradient_x_activation
    attr = method(agent, frames, target, layer=args.layer)
    values = getattr(attr, "values", attr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    png = write_saliency(
        out / f"{args.method}_{args.target.replace(':', '')}_{args.layer}.png",
        agent,
        frames,
        values,
        layer=args.layer,
    )
    np.savez(out / f"{png.stem}.npz", frames=np.asarray(index), attributions=np.asarray(values))
    print(f"wrote {png}")


def _cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "jaxinterp"


def _color_stats(checkpoint: Path, agent: Agent, frames: np.ndarray):
    """Colour statistics shipped beside the weights, else fitted once on the agent's own frames and cached (keyed
    by the weights' bytes, so a training run that moves on gets fresh statistics)."""
    from jaxinterp.featviz.param import fit_color_stats, load_color_stats, save_color_stats

    beside = checkpoint.with_suffix(".color.json")
    if beside.exists():
        return load_color_stats(beside)
    cache = _cache_root() / "color"
    cached = cache / f"{agent.params_digest()}.json"
    if cached.exists():
        return load_color_stats(cached)
    stats = fit_color_stats(frames)
    cache.mkdir(parents=True, exist_ok=True)
    save_color_stats(cached, stats.matrix, stats.mean)
    return stats


def _transforms(args):
    """The transform spec of `visualize`'s flags: the standard chain, its jitter replaced by ``--jitter``, or none."""
    from jaxinterp.featviz import transforms as tf

    if args.jitter is None:
        return not args.no_transforms
    if args.no_transforms:
        raise JaxinterpError("--jitter has no effect with --no-transforms; drop one of them")
    try:
        jitters = tuple(int(x) for x in args.jitter.split(","))
    except ValueError:
        raise JaxinterpError(f"--jitter {args.jitter!r}: give crop sizes in px, e.g. 16,8 or 8,4") from None
    return tf.Transform(jitters=jitters)


def _context(args):
    """The `ContextSpec` of `visualize`'s flags, or None without ``--context``; and the objective to use."""
    from jaxinterp.featviz.context import ContextSpec

    if not args.context:
        return None, args.objective or "channel"
    if args.jitter is not None or args.no_transforms:
        raise JaxinterpError(
            "--context shifts its patch by --context-jitter: drop --jitter / --no-transforms"
        )
    at = None
    if args.context_at:
        try:
            y, x = (int(v) for v in args.context_at.split(","))
        except ValueError:
            raise JaxinterpError(
                f"--context-at {args.context_at!r}: give the layer position as Y,X, e.g. 4,4"
            ) from None
        at = (y, x)
    given = {"size": args.context_size, "jitter": args.context_jitter, "batch": args.context_batch}
    spec = ContextSpec(**{k: v for k, v in given.items() if v is not None}, at=at)
    # By default the objective is the neuron under the patch (neuron@x,y takes the column first).
    return spec, args.objective or ("neuron" if at is None else f"neuron@{at[1]},{at[0]}")


def cmd_visualize(args) -> None:
    from jaxinterp.report.visualizations import visualize_layers
    from jaxinterp.rl.export import agent_frames
    from jaxinterp.weights.store import default_checkpoint

    transforms = _transforms(args)  # before the slow part, so bad flags fail at once
    context, objective = _context(args)
    checkpoint = Path(args.checkpoint or default_checkpoint())
    agent = _agent(args)
    if args.all_layers:
        layers = [n for n in agent.conv_layer_names if not n.endswith(".relu")]
    elif args.layer:
        layers = list(agent.check_layers([x for x in args.layer.split(",") if x]))
    else:
        raise JaxinterpError("give --layer NAME[,NAME...] or --all-layers")
    for layer in layers if context is not None else ():
        context.position(agent, layer)  # a bad --context-at fails before the agent plays
    frames = agent_frames(agent, args.real_frames, seed=args.seed)
    stats = _color_stats(checkpoint, agent, frames)
    summary = visualize_layers(
        agent,
        layers,
        args.channels,
        objective=objective,
        facets=args.facets,
        steps=args.steps,
        thresholds=tuple(int(t) for t in args.thresholds.split(",")) if args.thresholds else (),
        lr=args.lr,
        basis=args.basis,
        decorrelate=not args.no_decorrelate,
        color_matrix=stats.matrix,
        transforms=transforms,
        context=context,
        tv=args.tv,
        l2=args.l2,
        diversity=args.diversity,
        seed=args.seed,
        out_dir=args.out,
        real_frames=frames,
    )
    print(f"wrote {summary['out_dir']}")


def cmd_report(args) -> None:
    from jaxinterp.envs.dataset import Dataset
    from jaxinterp.envs.heist import HeistConfig
    from jaxinterp.envs.rollout import agent_policy, collect
    from jaxinterp.report.agent_report import REAL_FRAMES, write_agent_report
    from jaxinterp.weights.store import default_checkpoint

    checkpoint = Path(args.checkpoint or default_checkpoint())
    agent = _agent(args)
    out = Path(args.out)
    layers = agent.check_layers(x for x in (args.layers or "").split(",") if x) or None  # before any rollout
    if args.dataset:
        dataset = Dataset(args.dataset)
    else:  # the agent's own play on unbounded easy levels, recorded once under OUT (resumable)
        config = HeistConfig(seed=args.seed)
        dataset = collect(
            out / "data", frames=args.frames, policy=agent_policy(agent), env_config=config, seed=args.seed
        )
    stats = _color_stats(checkpoint, agent, dataset.evenly_spaced(REAL_FRAMES)["frames"])
    page = write_agent_report(
        agent,
        dataset,
        out,
        layers=layers,
        k=args.k,
        diversity=args.diversity,
        steps=args.steps,
        color_matrix=stats.matrix,
        seed=args.seed,
        source=str(checkpoint),
        sae=args.sae,
    )
    print(f"wrote {page}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jaxinterp", description="Interpretability for Procgen Heist agents, in JAX."
    )
    p.add_argument("--version", action="version", version=f"jaxinterp {version('jaxinterp')}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train-agent", help="train a Heist agent with PPO (resumable: rerun to continue)")
    t.add_argument("--frames", type=int, required=True, help="total environment frames to train to")
    t.add_argument(
        "--out", required=True, help="run directory (checkpoints, metrics.jsonl, learning_curve.png)"
    )
    t.add_argument("--arch", help="impala (default), impala-procgen-tools or interpretable-cnn")
    t.add_argument(
        "--config", help="JSON file or key=value,... overriding PPO defaults (e.g. update_epochs=1)"
    )
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--checkpoint-every", type=float, default=300.0, help="seconds between checkpoints")
    t.add_argument(
        "--init-from",
        help="start a new --out run from this run's latest checkpoint (to go on with another --config)",
    )
    t.set_defaults(func=cmd_train_agent)

    i = sub.add_parser(
        "info", help="architecture, actions, parameters and every layer's shape of a checkpoint"
    )
    i.add_argument("file", nargs="?", help="checkpoint (default: the shipped agent)")
    i.set_defaults(func=cmd_info)

    c = sub.add_parser(
        "convert",
        help="convert weights: the format follows OUT's suffix (.pt, .safetensors) or a directory for orbax",
    )
    c.add_argument(
        "input", help="weights file, orbax directory or train-agent run directory (its latest policy)"
    )
    c.add_argument("output")
    c.set_defaults(func=cmd_convert)

    r = sub.add_parser(
        "rollout", help="record Heist play (frames, actions, rewards, activations) to a dataset"
    )
    _checkpoint_arg(r)
    r.add_argument("--random", action="store_true", help="random actions instead of an agent")
    r.add_argument("--greedy", action="store_true", help="argmax actions instead of sampling")
    r.add_argument("--frames", type=int, required=True)
    r.add_argument("--out", required=True, help="dataset directory (rerun to resume or extend)")
    r.add_argument("--layers", help="comma-separated layer names whose activations to store")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--num-envs", type=int, default=64)
    r.add_argument("--distribution-mode", default="easy", choices=["easy", "hard"])
    r.add_argument("--num-levels", type=int, default=0, help="0: unbounded")
    r.add_argument("--start-level", type=int, default=0)
    r.set_defaults(func=cmd_rollout)

    e = sub.add_parser(
        "evaluate", help="mean return (95%% interval) and success rate, beside the random policy"
    )
    e.add_argument("checkpoint", nargs="?", help="checkpoint (default: the shipped agent)")
    e.add_argument("--episodes", type=int, default=1000)
    e.add_argument("--levels", default="unseen", choices=["unseen", "train"])
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--greedy", action="store_true")
    e.add_argument("--json", help="also write the results to this JSON file")
    e.set_defaults(func=cmd_evaluate)

    x = sub.add_parser(
        "export-agent", help="export a training run: .pt, .safetensors, colour stats, model card"
    )
    x.add_argument("run_dir")
    x.add_argument("out", help="output stem, e.g. weights/heist-impala")
    x.add_argument("--episodes", type=int, default=1000)
    x.add_argument("--seed", type=int, default=0)
    x.set_defaults(func=cmd_export_agent)

    ex = sub.add_parser(
        "examples", help="top-activating frames and diverse receptive-field patches per channel"
    )
    _layer_over_dataset_args(ex)
    ex.add_argument("--k", type=int, default=16)
    ex.add_argument(
        "--diversity", type=float, default=0.0, help="cosine-similarity penalty weight (0: top-k)"
    )
    ex.add_argument("--diversity-on", default="activations", choices=["activations", "pixels"])
    ex.add_argument(
        "--spatial",
        action="store_true",
        help="also draw each channel's spatial mosaic: at every position, the frame that excites it most there",
    )
    ex.add_argument(
        "--nmf",
        type=int,
        metavar="K",
        help="instead of channels, show K NMF directions of the layer fitted on the dataset (written to OUT/nmf/)",
    )
    ex.add_argument("--seed", type=int, default=0, help="seed of the NMF fit (--nmf)")
    ex.add_argument(
        "--reuse", type=int, help="cells one episode may fill in a mosaic (--spatial; default: a sixteenth)"
    )
    ex.add_argument("--out", required=True)
    ex.set_defaults(func=cmd_examples)

    ob = sub.add_parser(
        "objects", help="which game objects (keys, locks, gem, agent ...) each channel of a layer responds to"
    )
    _layer_over_dataset_args(ob)
    ob.add_argument("--out", required=True)
    ob.set_defaults(func=cmd_objects)

    at = sub.add_parser(
        "attribution", help="saliency overlays: gradient x activation or integrated gradients"
    )
    _checkpoint_arg(at)
    at.add_argument("--dataset", required=True)
    at.add_argument("--frames", required=True, help="comma-separated dataset rows, e.g. 0,100,2000")
    at.add_argument("--target", default="value", help="value | action:N (that action's logit)")
    at.add_argument("--layer", default="input", help="input (pixels) or a layer name (its channels)")
    at.add_argument("--method", default="ig", choices=["ig", "gxa"])
    at.add_argument("--out", required=True)
    at.set_defaults(func=cmd_attribution)

    rp = sub.add_parser(
        "report",
        help="one HTML page: every channel's visualization, top examples and objects, for each stage's output",
    )
    _checkpoint_arg(rp)
    rp.add_argument("--dataset", help="a rollout dataset (default: record the agent's play under OUT/data)")
    rp.add_argument("--frames", type=int, default=20000, help="frames to record when no --dataset is given")
    rp.add_argument("--layers", help="comma-separated layer names (default: each stage's output)")
    rp.add_argument("--k", type=int, default=16, help="examples per channel")
    rp.add_argument("--diversity", type=float, default=0.5, help="cosine-similarity penalty of the examples")
    rp.add_argument("--steps", type=int, default=512, help="feature-visualization steps")
    rp.add_argument("--seed", type=int, default=0)
    rp.add_argument("--out", required=True)
    rp.add_argument(
        "--sae", help="an SAE directory (jaxinterp sae train): adds a section with a row per latent"
    )
    rp.set_defaults(func=cmd_report)

    v = sub.add_parser(
        "visualize", help="feature visualization of every channel of a layer, in one jitted call"
    )
    _checkpoint_arg(v)
    v.add_argument("--layer", help="layer name(s), comma-separated")
    v.add_argument("--all-layers", action="store_true", help="every spatial layer (pre-relu names)")
    v.add_argument("--channels", default="all", help="all | 3 | 0-15 | 1,4,9")
    v.add_argument(
        "--objective",
        help="channel (the default) | neuron | 'L:7 - 0.5*L:3' | action:2 | value | deepdream:L ... (see README)",
    )
    v.add_argument("--facets", type=int, default=1)
    v.add_argument("--steps", type=int, default=512)
    v.add_argument("--thresholds", help="steps at which to keep images too, e.g. 64,256")
    v.add_argument("--lr", type=float, default=0.05)
    v.add_argument("--basis", default="fft", choices=["fft", "pixel"])
    v.add_argument("--no-decorrelate", action="store_true")
    v.add_argument("--no-transforms", action="store_true")
    v.add_argument(
        "--jitter",
        help="jitter crop sizes in px, before and after scale/rotation (default 16,8; 8,4 suits --objective neuron)",
    )
    v.add_argument(
        "--context",
        action="store_true",
        help="optimize a patch pasted into the agent's frames over one position (objective: its neuron)",
    )
    v.add_argument("--context-size", type=int, help="patch side in px (default two maze tiles)")
    v.add_argument(
        "--context-jitter", type=int, help="largest patch shift per step in px (default half a cell)"
    )
    v.add_argument("--context-batch", type=int, help="frames each patch is pasted into per step")
    v.add_argument("--context-at", help="layer position Y,X under the patch (default the centre)")
    v.add_argument("--tv", type=float, default=0.0)
    v.add_argument("--l2", type=float, default=0.0)
    v.add_argument("--diversity", type=float, default=0.0, help="facet diversity weight (needs --facets > 1)")
    v.add_argument(
        "--real-frames",
        type=int,
        default=1024,
        help="frames of the agent's play for percentiles and colour statistics",
    )
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--out", required=True)
    v.set_defaults(func=cmd_visualize)

    add_sae_commands(sub)
    return p


def _layer_over_dataset_args(p: argparse.ArgumentParser) -> None:
    """The arguments of a command that scans a layer's channels over a rollout dataset."""
    _checkpoint_arg(p)
    p.add_argument("--layer", required=True)
    p.add_argument("--dataset", required=True, help="a rollout dataset directory (jaxinterp rollout)")
    p.add_argument("--channels", default="all", help="all | 3 | 0-15 | 1,4,9")


def _checkpoint_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", help="agent weights (default: the shipped agent in weights/)")


# Commands whose work is split over the local devices (data parallel or sharded channels).
SPLIT_CPU_COMMANDS = ("visualize", "train-agent", "rollout", "evaluate", "sae")


def entry() -> int:
    """The ``jaxinterp`` console script: `main` in a fresh process, where the sharded commands first split the CPU."""
    argv = sys.argv[1:]
    if argv[:1] and argv[0] in SPLIT_CPU_COMMANDS:
        _one_cpu_device_per_core()
    _persistent_compile_cache()
    return main(argv)


COMPILE_CACHE_BYTES = 2**30
"""The on-disk compile cache's size; JAX evicts the least recently used programs beyond it."""


def _persistent_compile_cache() -> None:
    """Keep compiled XLA programs on disk, so that running a command again skips most of its compiling (a 4-channel
    ``visualize`` on the 2-core CPU: 26-28 s the first time, 14-15 s after; see `benchmarks/RESULTS.md`).

    Where: ``JAXINTERP_COMPILE_CACHE`` (``off`` turns it off), else ``~/.cache/jaxinterp/xla``; a
    ``JAX_COMPILATION_CACHE_DIR`` the user set is left to JAX. Only programs that took over a second to compile
    are kept (JAX's default)."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    where = os.environ.get("JAXINTERP_COMPILE_CACHE", str(_cache_root() / "xla"))
    if where.strip().lower() in ("", "off", "0", "false", "no"):
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", where)
    jax.config.update("jax_compilation_cache_max_size", COMPILE_CACHE_BYTES)


def _one_cpu_device_per_core() -> None:
    """Expose each CPU core as a JAX device, unless ``XLA_FLAGS`` already sets a count, so that visualization shards
    its channels and PPO its minibatches over the cores: on 2 cores 1.16-1.60x (visualization) and 1.26x (a PPO
    minibatch) faster than one device running XLA's own threads (`benchmarks/RESULTS.md`). Only takes effect before
    JAX starts its backends; accelerators are unaffected."""
    flags = os.environ.get("XLA_FLAGS", "")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cores > 1 and "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={cores}".strip()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except JaxinterpError as e:
        print(f"jaxinterp: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and friends
        sys.stderr.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
