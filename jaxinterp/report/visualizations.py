"""The feature-visualization job behind the CLI: every channel of some layers, to PNGs, contact sheets and .npz.

``visualize_layers`` optimizes images chunk by chunk (resumable: chunks and layers whose outputs exist with the
same settings are skipped), and measures each image against real frames: the fraction of channels whose image
drives the objective past the 99th / 99.9th percentile of its values on the agent's own frames.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp import render as report_images
from jaxinterp.errors import JaxinterpError
from jaxinterp.featviz import objectives as obj
from jaxinterp.featviz import param as param_lib
from jaxinterp.featviz import transforms as tf
from jaxinterp.featviz.context import Context, ContextSpec
from jaxinterp.featviz.engine import DEFAULT_LR, DEFAULT_STEPS, VisualizeConfig, make_visualize
from jaxinterp.featviz.real_values import PERCENTILES, real_frame_values
from jaxinterp.featviz.real_values import real_percentiles as _percentiles
from jaxinterp.models.agent import Agent, array_digest, check_obs, parse_channels

__all__ = [
    "PERCENTILES",
    "SETTINGS_FORMAT",
    "real_frame_values",
    "visualize_layers",
]

SETTINGS_FORMAT = "jaxinterp.featviz/1"
DEFAULT_SCALE = 4
"""PNG upscaling (nearest): a 64-px image becomes 256 px, large enough to see single pixels."""
CONTEXT_FRAMES = 4
"""Frames each ``context_<c>.png`` shows a channel's first patch in."""
SHEET_IMAGES_PER_ROW = 8
"""Images per contact-sheet row: 8 channels of one facet, 4 channels of two facets, ..."""
_CACHE_SIZE = 8  # compiled programs kept for reruns in one process (resuming, more channels, other seeds)

ObjectiveSpec = str | Callable[[str], obj.Objective]


def _objectives(
    spec: ObjectiveSpec, layer: str, penalties: dict[str, float]
) -> tuple[obj.Objective, obj.Objective]:
    """(what to optimize, what to measure): the target minus the weighted penalties, and the target alone."""
    target = spec(layer) if callable(spec) else obj.parse_objective(spec, layer=layer)
    full = target
    makers = {
        "tv": obj.total_variation,
        "l1": obj.l1,
        "l2": obj.l2,
        "blur": obj.blur,
        "diversity": lambda: obj.diversity(layer),
    }
    for name, weight in penalties.items():
        if weight:
            full = full - float(weight) * makers[name]()
    return full, target


def write_json(path: Path, payload: dict) -> None:
    """Write ``payload`` to ``path`` whole or not at all (through a temporary file)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    tmp.replace(path)


def _save_npz(path: Path, **arrays) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def visualize_layers(
    agent: Agent,
    layers: Sequence[str] | str,
    channels: str | int | Sequence[int] | None = "all",
    *,
    objective: ObjectiveSpec = "channel",
    facets: int = 1,
    steps: int = DEFAULT_STEPS,
    thresholds: Sequence[int] = (),
    lr: float = DEFAULT_LR,
    basis: str = "fft",
    decorrelate: bool = True,
    color_matrix: np.ndarray | None = None,
    transforms: tf.Transform | bool | None = True,
    context: ContextSpec | None = None,
    tv: float = 0.0,
    l1: float = 0.0,
    l2: float = 0.0,
    blur: float = 0.0,
    diversity: float = 0.0,
    seed: int = 0,
    out_dir: str | Path,
    real_frames=None,
    scale: int = DEFAULT_SCALE,
    max_images: int | None = None,
    resume: bool = True,
    progress: bool = True,
    scan: bool = True,
    compiler_options: tuple[tuple[str, Any], ...] = (),
) -> dict[str, Any]:
    """Visualize ``channels`` of each of ``layers``; write PNGs, a contact sheet and an .npz per layer.

    ``objective`` is a string with ``channel``/``neuron``/``deepdream`` meaning the current layer
    (``"channel"``, ``"neuron@3,4"``, ``"channel - 1e-3*tv"``) or ``layer -> Objective``; its index runs over
    ``channels`` (for the logits layer, ``channel`` visualizes actions). Penalty weights ``tv``, ``l1``, ``l2``,
    ``blur`` and ``diversity`` (between facets) are subtracted from it; values are measured without them.
    ``color_matrix`` (3×3, e.g. ``param.fit_color_decorrelation`` of the agent's frames) defaults to ImageNet's.
    With ``real_frames`` (uint8 (N, 64, 64, 3)) each layer reports the fraction of channels whose best facet
    beats the 99th and 99.9th percentile of the objective on real frames. With ``context`` (a `ContextSpec`)
    each image is a patch optimized inside ``real_frames`` (see `jaxinterp.featviz.context`) over one position's
    receptive field, in place of a whole image and its ``transforms``; give an objective at that position
    (``"neuron"`` for the centre, ``"neuron@x,y"`` with ``context.at == (y, x)``).

    Writes ``out_dir/<layer>/``: ``channel_<c>.png`` (facets side by side, upscaled ``scale``×), ``sheet.png``,
    ``images.npz`` (images (T, C, K, 64, 64, 3) at each kept step, or patches with a context; values (T, C, K),
    losses, channels, thresholds, percentiles) and ``settings.json``, and with a context ``context_<c>.png`` (the
    patch in the first frames); finished chunks live in ``chunks/`` until the layer is done.
    Returns ``{"out_dir", "layers": {layer: summary}}``. In a multi-process job every process must call this
    with the same arguments; process 0 writes (resuming needs ``out_dir`` on storage every process sees).
    ``max_images``, ``scan`` and ``compiler_options`` are passed to `VisualizeConfig`.
    """
    if isinstance(layers, str):
        layers = [s.strip() for s in layers.split(",") if s.strip()]
    layers = list(agent.check_layers(layers))
    if not layers:
        raise JaxinterpError("no layers to visualize; pass layer names (see agent.layer_names)")
    if not (isinstance(scale, int) and scale >= 1):
        raise JaxinterpError(f"`scale` (={scale!r}) must be an int >= 1")
    matrix = (
        param_lib.IMAGENET_COLOR_CORRELATION if color_matrix is None else np.asarray(color_matrix, np.float32)
    )
    if matrix.shape != (3, 3):
        raise JaxinterpError(f"`color_matrix` must be 3×3, got shape {matrix.shape}")
    if basis not in ("fft", "pixel"):
        raise JaxinterpError(f"`basis` (={basis!r}) must be 'fft' or 'pixel'")
    spec = tf.standard_transforms() if transforms is True else (transforms or None)
    if spec is not None and not isinstance(spec, tf.Transform):
        raise JaxinterpError(f"`transforms` must be True, False/None or a transforms.Transform, got {spec!r}")
    if real_frames is not None:
        real_frames = np.asarray(check_obs(real_frames))
    size = param_lib.DEFAULT_SIZE
    if context is not None:
        if isinstance(transforms, tf.Transform):
            raise JaxinterpError(
                "a context shifts its patch by its own jitter: leave `transforms` at its default"
            )
        if real_frames is None:
            raise JaxinterpError(
                "a context pastes patches into real frames: pass `real_frames` (the agent's play)"
            )
        spec, size = None, context.size
    image_param = param_lib.image(size, basis=basis, decorrelate=matrix if decorrelate else None)
    penalties = {"tv": tv, "l1": l1, "l2": l2, "blur": blur, "diversity": diversity}
    out_dir = Path(out_dir)
    writer = jax.process_index() == 0
    key = jax.random.key(seed)
    common = {
        "format": SETTINGS_FORMAT,
        "agent": {"arch": agent.arch.name, "params": agent.params_digest()},
        "facets": facets,
        "steps": steps,
        "thresholds": sorted({*map(int, thresholds), steps}),
        "lr": lr,
        "basis": basis,
        "color_matrix": matrix.tolist() if decorrelate else None,
        "transforms": dataclasses.asdict(spec) if spec is not None else None,
        "seed": seed,
        "real_frames": array_digest([real_frames]) if real_frames is not None else None,
        # The frames are part of a context's program (unlike the percentiles' frames), so they are named here too.
        "context": None
        if context is None
        else dataclasses.asdict(context) | {"frames": array_digest([real_frames])},
    }

    base_config = VisualizeConfig(
        steps=steps,
        thresholds=tuple(thresholds),
        facets=facets,
        lr=lr,
        param=image_param,
        transforms=spec,
        max_images=max_images,
        scan=scan,
        compiler_options=tuple(compiler_options),
    )
    plans = []
    for layer in layers:
        full, target = _objectives(objective, layer, penalties)
        full.validate(agent)
        n = full.num_indices(agent)
        chans = parse_channels(channels, n, f"layer {layer!r}") if n is not None else [0]
        settings = common | {"layer": layer, "objective": full.description, "measure": target.description}
        # Through JSON and back (tuples become lists), so it compares equal to what settings.json holds.
        settings = json.loads(json.dumps(settings))
        folder = out_dir / report_images.file_stem(layer)
        config = dataclasses.replace(
            base_config,
            measure=target,
            context=None if context is None else context.build(agent, layer, real_frames),
        )
        plans.append(_LayerPlan(layer, full, target, chans, settings, config, folder))

    bar = None
    if progress and writer:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(len(p.channels) for p in plans), desc="featviz", unit="ch")
    summary: dict[str, Any] = {"out_dir": str(out_dir), "layers": {}}
    try:
        shared = _Shared(agent, key, real_frames, scale, resume, writer, bar)
        for plan in plans:
            summary["layers"][plan.layer] = _one_layer(shared, plan)
    finally:
        if bar is not None:
            bar.close()
    for layer, s in summary["layers"].items():
        line = f"{layer}: {len(s['channels'])} channels, mean value {s['mean_value']:.3g}"
        if s.get("beat_p99") is not None:
            line += f"; beat real-frame p99 {s['beat_p99']:.0%}, p99.9 {s['beat_p999']:.0%}"
            if s["nonpositive_p999"]:
                line += f"; {s['nonpositive_p999']} channels' measure is <= 0 on 99.9% of real frames (easy to beat)"
        if progress and writer:
            print(line)
    return summary


class _LayerPlan(NamedTuple):
    """One layer's job: its objective and the measure reported, channels, settings, config and output folder."""

    layer: str
    full: obj.Objective
    target: obj.Objective
    channels: list[int]
    settings: dict[str, Any]
    config: VisualizeConfig
    folder: Path


class _Shared(NamedTuple):
    """What every layer of one ``visualize_layers`` call shares."""

    agent: Agent
    key: Any
    real_frames: Any
    scale: int
    resume: bool
    writer: bool
    bar: Any


def _one_layer(shared: _Shared, plan: _LayerPlan) -> dict[str, Any]:
    agent, key, real_frames, scale, resume, writer, bar = shared
    layer, full, target, chans, settings, config, folder = plan
    settings_path, final_path = folder / "settings.json", folder / "images.npz"
    chunk_dir = folder / "chunks"
    same = resume and settings_path.exists() and json.loads(settings_path.read_text()) == settings
    done: dict[int, dict[str, np.ndarray]] = {}
    if same and final_path.exists():
        with np.load(final_path) as z:
            if z["channels"].tolist() == chans:
                if bar is not None:
                    bar.update(len(chans))
                return _layer_summary(layer, {k: z[k] for k in z.files}, folder, skipped=True, seconds=0.0)
            done |= _per_channel(z)  # another channel selection with the same settings: reuse its channels
    if writer:
        folder.mkdir(parents=True, exist_ok=True)
        if (
            not same
        ):  # different settings: earlier results are stale (remove them before the new settings land)
            for old in [final_path, *(chunk_dir.glob("*.npz") if chunk_dir.exists() else ())]:
                old.unlink(missing_ok=True)
        write_json(settings_path, settings)
        chunk_dir.mkdir(exist_ok=True)
    for path in sorted(chunk_dir.glob("chunk_*.npz")) if (same and chunk_dir.exists()) else ():
        with np.load(path) as z:
            done |= _per_channel(z)
    todo = [c for c in chans if c not in done]
    if bar is not None:
        bar.update(len(chans) - len(todo))

    visualize = _visualizer(agent, full, config, settings)
    start = time.perf_counter()
    size = visualize.chunk_channels
    for s in range(0, len(todo), size):
        part = todo[s : s + size]
        r = visualize(key, part)
        arrays = {"images": r.images, "values": r.values, "losses": r.losses, "channels": r.channels}
        if writer:
            _save_npz(chunk_dir / f"chunk_{part[0]:05d}_{part[-1]:05d}.npz", **arrays)
        done |= _per_channel(arrays)
        if bar is not None:
            bar.update(len(part))
    seconds = time.perf_counter() - start

    arrays = {
        "images": np.stack([done[c]["images"] for c in chans], axis=1),
        "values": np.stack([done[c]["values"] for c in chans], axis=1),
        "losses": np.stack([done[c]["losses"] for c in chans]),
        "channels": np.asarray(chans, np.int64),
        "thresholds": np.asarray(config.kept, np.int64),
    }
    if real_frames is not None:
        arrays["percentiles"] = _percentiles(agent, target, chans, real_frames)
        arrays["percentile_q"] = np.asarray(PERCENTILES, np.float32)
    if writer:
        _write_outputs(folder, layer, target, arrays, scale, config.context)
        _save_npz(final_path, **arrays)
        for path in chunk_dir.glob("chunk_*.npz"):
            path.unlink()
        if chunk_dir.exists() and not any(chunk_dir.iterdir()):
            chunk_dir.rmdir()
    rate = len(todo) * config.steps / seconds if todo and seconds > 0 else None
    return _layer_summary(
        layer, arrays, folder, skipped=False, seconds=seconds, computed=len(todo), rate=rate
    )


def _per_channel(z) -> dict[int, dict[str, np.ndarray]]:
    """{channel: its images (T, K, ...), values (T, K), losses (K, steps)} from a chunk or a layer's arrays."""
    return {
        int(c): {"images": z["images"][:, j], "values": z["values"][:, j], "losses": z["losses"][j]}
        for j, c in enumerate(np.asarray(z["channels"]).tolist())
    }


_VISUALIZERS: dict[tuple, Any] = {}


def _visualizer(agent, full, config, settings):
    """A visualizer for these settings, reusing a compiled one from an earlier call in this process."""
    same_program = {k: v for k, v in settings.items() if k not in ("seed", "real_frames")}
    key = (
        id(agent),
        json.dumps(same_program, sort_keys=True),
        config.max_images,
        config.scan,
        config.compiler_options,
    )
    hit = _VISUALIZERS.get(key)
    if hit is None or hit.agent is not agent:
        hit = make_visualize(agent, full, config)
        while len(_VISUALIZERS) >= _CACHE_SIZE:
            _VISUALIZERS.pop(next(iter(_VISUALIZERS)))
        _VISUALIZERS[key] = hit
    return hit


def _write_outputs(
    folder: Path, layer: str, target: obj.Objective, arrays: dict, scale: int, context: Context | None
) -> None:
    final, values = arrays["images"][-1], arrays["values"][-1]  # (C, K, ...), (C, K)
    # With real frames, each caption's second line is the channel's real-frame p99.9, the bar its image must beat.
    p999 = arrays["percentiles"][PERCENTILES.index(99.9)] if "percentiles" in arrays else [None] * len(final)
    # A context's patches are drawn as large as whole images, and the sheet shows each in the first frame.
    zoom = scale * max(1, param_lib.DEFAULT_SIZE // final.shape[2])
    # (C, K, CONTEXT_FRAMES, 64, 64, 3): one paste serves the sheet (first frame) and context_<c>.png (first facet).
    pasted = None if context is None else _in_context(context, final, CONTEXT_FRAMES)
    shown = final if pasted is None else pasted[:, :, 0]
    labels = []
    for c, ims, vals, p in zip(arrays["channels"].tolist(), final, values, p999, strict=True):
        report_images.save_png(folder / f"channel_{c:03d}.png", report_images.side_by_side(ims, scale=zoom))
        labels.append(f"{c}: {vals.max():.3g}" + ("" if p is None else f"\nreal p99.9 {p:.3g}"))
    if pasted is not None:
        for c, row in zip(arrays["channels"].tolist(), pasted[:, 0], strict=True):
            report_images.save_png(
                folder / f"context_{c:03d}.png", report_images.side_by_side(row, scale=scale)
            )
    cells = np.stack([report_images.side_by_side(ims, gap=2) for ims in shown])
    report_images.write_contact_sheet(
        folder / "sheet.png",
        cells,
        labels,
        scale=2,
        columns=max(1, SHEET_IMAGES_PER_ROW // final.shape[1]),  # rows about equally wide for any facet count
        title=f"{target.description} (value after {arrays['thresholds'][-1]} steps)",
    )


def _in_context(context: Context, images: np.ndarray, frames: int) -> np.ndarray:
    """(C, K, S, S, 3) patches -> (C, K, frames, 64, 64, 3): each in the context's first frames, at its place."""
    c, k = images.shape[:2]
    pasted = np.asarray(jax.jit(context.paste)(jnp.asarray(images.reshape(c * k, *images.shape[2:]))))
    return pasted.reshape(c, k, -1, *pasted.shape[1:])[:, :, :frames]


def _layer_summary(
    layer, arrays, folder: Path, *, skipped: bool, seconds: float, computed: int = 0, rate=None
) -> dict[str, Any]:
    best = np.asarray(arrays["values"])[-1].max(axis=1)  # best facet per channel, at the last kept step
    out: dict[str, Any] = {
        "channels": np.asarray(arrays["channels"]).tolist(),
        "values": best.tolist(),
        "mean_value": float(best.mean()),
        "folder": str(folder),
        "skipped": skipped,
        "computed": computed,
        "seconds": seconds,
        "channel_steps_per_s": rate,  # like `seconds`, includes compiling
        "beat_p99": None,
        "beat_p999": None,
    }
    if "percentiles" in arrays:
        p = np.asarray(arrays["percentiles"])
        out |= {
            "p99": p[0].tolist(),
            "p999": p[1].tolist(),
            "beat_p99": float(np.mean(best > p[0])),
            "beat_p999": float(np.mean(best > p[1])),
            # Channels whose measure is <= 0 on 99.9% of real frames: beating that percentile is easy and says
            # little. For the channel objective the measure is the spatial mean, which a channel that fires at
            # a few positions (one lock) keeps below 0: this does not say the channel is off in play.
            "nonpositive_p999": int(np.sum(p[1] <= 0)),
        }
    return out
