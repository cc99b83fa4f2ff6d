"""Dataset commands: ``examples`` (top frames and patches, spatial mosaics, NMF directions), ``objects``,
``attribution``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from jaxinterp.cli.common import (
    add_checkpoint_arg,
    add_layer_over_dataset_args,
    add_seed_arg,
    given,
    load,
    parse_ints,
)
from jaxinterp.errors import JaxinterpError

if TYPE_CHECKING:
    from jaxinterp.envs.dataset import Dataset
    from jaxinterp.examples.features import Feature
    from jaxinterp.models.agent import Agent

__all__ = ["OBJECT_MAP_FRAMES", "add_parsers", "cmd_attribution", "cmd_examples", "cmd_objects"]

OBJECT_MAP_FRAMES = 8
"""Frames, evenly spaced over the dataset, whose object maps ``objects`` draws as a check of the ground truth."""


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register this group's commands on the top-level subparsers, in the order ``--help`` lists them."""
    for add in (_add_examples, _add_objects, _add_attribution):
        add(sub)


def _channels(agent: Agent, layer: str, spec: str | None) -> list[int] | None:
    from jaxinterp.models.agent import parse_channels

    layer = agent.check_layers([layer])[0]
    return None if spec in (None, "all") else parse_channels(spec, agent.layer_shapes[layer][-1], repr(layer))


def _add_examples(sub) -> None:
    ex = sub.add_parser(
        "examples", help="top-activating frames and diverse receptive-field patches per channel"
    )
    add_layer_over_dataset_args(ex)
    ex.add_argument("--k", type=int, help="examples per channel (default 16)")
    ex.add_argument("--diversity", type=float, help="cosine-similarity penalty weight (0: top-k)")
    ex.add_argument(
        "--diversity-on",
        choices=["activations", "pixels"],
        help="what the diversity penalty compares (default activations)",
    )
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
    add_seed_arg(ex, help="seed of the NMF fit (--nmf)")
    ex.add_argument(
        "--reuse", type=int, help="cells one episode may fill in a mosaic (--spatial; default: a sixteenth)"
    )
    ex.add_argument("--out", required=True, help="output directory for the sheets")
    ex.set_defaults(func=cmd_examples)


def cmd_examples(args) -> None:
    from jaxinterp.envs.dataset import Dataset
    from jaxinterp.examples.find import find_examples
    from jaxinterp.report.example_sheets import write_sheets

    agent = load(args.checkpoint)
    dataset = Dataset(args.dataset)
    out = Path(args.out)
    if args.spatial and agent.check_layers([args.layer])[0] not in agent.conv_layer_names:
        raise JaxinterpError(
            f"--spatial needs positions; {args.layer} is a dense layer: use one of {', '.join(agent.conv_layer_names)}"
        )
    if args.nmf:
        out = out / "nmf"  # direction i's sheets would otherwise overwrite channel i's
        feature, channels = _nmf_feature(args, agent, dataset, out), None
    else:
        feature, channels = args.layer, _channels(agent, args.layer, args.channels)
    options = given(k=args.k, diversity=args.diversity, diversity_on=args.diversity_on)
    result = find_examples(agent, feature, dataset, channels=channels, progress=True, **options)
    paths = write_sheets(result, out, object_maps=dataset)  # names the game object under every patch
    if args.spatial:
        from jaxinterp.examples.spatial import spatial_examples
        from jaxinterp.report.example_sheets import write_spatial

        mosaics = spatial_examples(agent, feature, dataset, channels=channels, progress=True)
        paths += write_spatial(mosaics, out, reuse=args.reuse)
    print(f"wrote {len(paths)} files to {out} ({result.num_frames:,} frames scanned)")


def _nmf_feature(args, agent: Agent, dataset: Dataset, out: Path) -> Feature:
    """``--nmf K``: K directions of the layer fitted on the dataset, saved under ``out`` and described."""
    from jaxinterp.examples import nmf
    from jaxinterp.render import file_stem

    if args.channels != "all":
        raise JaxinterpError("--nmf finds its own directions of the layer: leave out --channels")
    frames = dataset.evenly_spaced(nmf.FIT_FRAMES)["frames"]
    dirs = nmf.fit_directions(agent, args.layer, frames, args.nmf, seed=args.seed)
    nmf.save_npz(dirs, out / f"{file_stem(dirs.layer)}_nmf.npz")
    print(nmf.describe(dirs))
    return dirs.feature()


def _add_objects(sub) -> None:
    ob = sub.add_parser(
        "objects", help="which game objects (keys, locks, gem, agent ...) each channel of a layer responds to"
    )
    add_layer_over_dataset_args(ob)
    ob.add_argument("--out", required=True, help="output directory for the tables and maps")
    ob.set_defaults(func=cmd_objects)


def cmd_objects(args) -> None:
    import numpy as np

    from jaxinterp.envs.dataset import Dataset
    from jaxinterp.examples.object_response import object_response
    from jaxinterp.render import save_png
    from jaxinterp.report.object_tables import object_maps_sheet, object_table, write_object_response

    agent = load(args.checkpoint)
    channels = _channels(agent, args.layer, args.channels)
    dataset = Dataset(args.dataset)
    result = object_response(agent, args.layer, dataset, channels=channels, progress=True)
    paths = write_object_response(result, args.out)
    sample = np.linspace(0, len(dataset) - 1, OBJECT_MAP_FRAMES).astype(np.int64)
    rows = dataset.get(sample, ["frames", "objects"])
    paths.append(
        save_png(Path(args.out) / "object_maps.png", object_maps_sheet(rows["frames"], rows["objects"]))
    )
    print(object_table(result), end="")
    print(f"wrote {', '.join(p.name for p in paths)} to {args.out}")


def _add_attribution(sub) -> None:
    at = sub.add_parser(
        "attribution", help="saliency overlays: gradient x activation or integrated gradients"
    )
    add_checkpoint_arg(at)
    at.add_argument("--dataset", required=True, help="a rollout dataset directory (jaxinterp rollout)")
    at.add_argument("--frames", required=True, help="comma-separated dataset rows, e.g. 0,100,2000")
    at.add_argument("--target", default="value", help="value | action:N (that action's logit)")
    at.add_argument("--layer", help="input (pixels) or a layer name (its channels)")
    at.add_argument(
        "--method",
        default="ig",
        choices=["ig", "gxa"],
        help="integrated gradients or gradient x activation (default ig)",
    )
    at.add_argument("--out", required=True, help="output directory for the overlays")
    at.set_defaults(func=cmd_attribution)


def cmd_attribution(args) -> None:
    import numpy as np

    from jaxinterp.atomic import write_npz
    from jaxinterp.envs.dataset import Dataset
    from jaxinterp.examples.attribution import INPUT, gradient_x_activation, integrated_gradients
    from jaxinterp.report.overlays import write_saliency

    agent = load(args.checkpoint)
    ds = Dataset(args.dataset)
    index = parse_ints(args.frames, "--frames", "comma-separated dataset rows, e.g. 0,100,2000")
    if any(not 0 <= i < len(ds) for i in index):
        raise JaxinterpError(f"--frames must be row numbers in 0-{len(ds) - 1} of {args.dataset}")
    frames = ds[np.asarray(index)]["frames"]
    target = "value" if args.target == "value" else int(args.target.removeprefix("action:"))
    layer = args.layer or INPUT
    method = integrated_gradients if args.method == "ig" else gradient_x_activation
    attr = method(agent, frames, target, layer=layer)
    values = getattr(attr, "values", attr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    png = write_saliency(
        out / f"{args.method}_{args.target.replace(':', '')}_{layer}.png", agent, frames, values, layer=layer
    )
    write_npz(out / f"{png.stem}.npz", frames=np.asarray(index), attributions=np.asarray(values))
    print(f"wrote {png}")
