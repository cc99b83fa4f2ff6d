"""The feature-visualization job behind the CLI and the report: every channel of some layers, to PNGs, contact
sheets and .npz.

`FeatvizSettings` say how each layer's images are made, checked once when built; ``visualize_layers`` optimizes
them chunk by chunk (resumable: chunks and layers whose outputs exist with the same settings are skipped), and
measures each image against real frames: the fraction of channels whose image drives the objective past the 99th /
99.9th percentile of its values on the agent's own frames.
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
from tqdm.auto import tqdm

from jaxinterp import render as report_images
from jaxinterp.atomic import write_json, write_npz
from jaxinterp.errors import JaxinterpError
from jaxinterp.featviz import objectives as obj
from jaxinterp.featviz import param as param_lib
from jaxinterp.featviz import transforms as tf
from jaxinterp.featviz.context import Context, ContextSpec
from jaxinterp.featviz.engine import DEFAULT_LR, DEFAULT_STEPS, VisualizeConfig, make_visualize
from jaxinterp.featviz.real_values import PERCENTILES, real_percentiles
from jaxinterp.models.agent import Agent, array_digest, check_obs, parse_channels
from jaxinterp.progress import bar as progress_bar

__all__ = ["SETTINGS_FORMAT", "FeatvizSettings", "visualize_layers", "write_layer_outputs"]

SETTINGS_FORMAT = "jaxinterp.featviz/1"
CONTEXT_FRAMES = 4
"""Frames each ``context_<c>.png`` shows a channel's first patch in."""
SHEET_IMAGES_PER_ROW = 8
"""Images per contact-sheet row: 8 channels of one facet, 4 channels of two facets, ..."""

ObjectiveSpec = str | Callable[[str], obj.Objective]


@dataclasses.dataclass(frozen=True)
class FeatvizSettings:
    """How `visualize_layers` makes and measures each layer's images, checked once when built (the engine's part by
    `VisualizeConfig`, which ``engine`` holds).

    ``objective`` is a string in which ``channel``/``neuron``/``deepdream`` mean the current layer (``"channel"``,
    ``"neuron@3,4"``, ``"channel - 1e-3*tv"``) or ``layer -> Objective``; its index runs over the channels (for the
    logits layer, ``channel`` visualizes actions). The penalty weights ``tv``, ``l1``, ``l2``, ``blur`` and
    ``diversity`` (between facets) are subtracted from it; values are measured without them. With a ``context``
    each image is a patch optimized inside the real frames (see `jaxinterp.featviz.context`) over one position's
    receptive field, in place of a whole image and its ``transforms``; give an objective at that position
    (``"neuron"`` for the centre, ``"neuron@x,y"`` with ``context.at == (y, x)``).
    """

    objective: ObjectiveSpec = "channel"
    steps: int = DEFAULT_STEPS
    thresholds: tuple[int, ...] = ()
    """Step counts at which images are kept as well as the last."""
    facets: int = 1
    lr: float = DEFAULT_LR
    basis: str = "fft"
    """The image parameterization's basis: 'fft' or 'pixel'."""
    decorrelate: bool = True
    color_matrix: tuple[tuple[float, ...], ...] | None = None
    """3×3, e.g. ``param.fit_color_stats(frames).matrix`` (any array-like; kept as a tuple); None: ImageNet's."""
    transforms: tf.Transform | None = dataclasses.field(default_factory=tf.standard_transforms)
    """Random transforms before the network each step; None for none."""
    context: ContextSpec | None = None
    tv: float = 0.0
    l1: float = 0.0
    l2: float = 0.0
    blur: float = 0.0
    diversity: float = 0.0
    seed: int = 0
    scale: int = report_images.DEFAULT_SCALE
    """PNG upscaling (nearest)."""
    max_images: int | None = None
    scan: bool = True
    compiler_options: tuple[tuple[str, Any], ...] = ()
    """``max_images``, ``scan`` and ``compiler_options``: see `VisualizeConfig`."""
    engine: VisualizeConfig = dataclasses.field(init=False, repr=False, compare=False)
    """The engine's config of these settings; each layer adds its measure and context."""

    def __post_init__(self) -> None:
        if self.color_matrix is not None:
            matrix = np.asarray(self.color_matrix, np.float32)
            if matrix.shape != (3, 3):
                raise JaxinterpError(f"`color_matrix` must be 3×3, got shape {matrix.shape}")
            object.__setattr__(self, "color_matrix", tuple(map(tuple, matrix.tolist())))
        if not (isinstance(self.scale, int) and self.scale >= 1):
            raise JaxinterpError(f"`scale` (={self.scale!r}) must be an int >= 1")
        if self.transforms is not None and not isinstance(self.transforms, tf.Transform):
            raise JaxinterpError(
                f"`transforms` must be a transforms.Transform or None, got {self.transforms!r}"
            )
        if self.context is not None and self.transforms not in (None, tf.standard_transforms()):
            raise JaxinterpError(
                "a context shifts its patch by its own jitter: leave `transforms` at its default"
            )
        size = param_lib.DEFAULT_SIZE if self.context is None else self.context.size
        engine = VisualizeConfig(
            steps=self.steps,
            thresholds=tuple(self.thresholds),
            facets=self.facets,
            lr=self.lr,
            param=param_lib.image(
                size, basis=self.basis, decorrelate=self.matrix if self.decorrelate else None
            ),
            transforms=self.transforms if self.context is None else None,
            max_images=self.max_images,
            scan=self.scan,
            compiler_options=self.compiler_options,
        )
        object.__setattr__(self, "thresholds", engine.thresholds)
        object.__setattr__(self, "compiler_options", engine.compiler_options)
        object.__setattr__(self, "engine", engine)

    @property
    def matrix(self) -> np.ndarray:
        """The colour matrix the images are decorrelated with (when ``decorrelate``), float32 3×3."""
        if self.color_matrix is None:
            return param_lib.IMAGENET_COLOR_CORRELATION
        return np.asarray(self.color_matrix, np.float32)

    def objectives(self, layer: str) -> tuple[obj.Objective, obj.Objective]:
        """(what to optimize, what to measure) at ``layer``: the target minus the weighted penalties, and the target."""
        spec = self.objective
        target = spec(layer) if callable(spec) else obj.parse_objective(spec, layer=layer)
        full = target
        penalties = (
            (self.tv, obj.total_variation),
            (self.l1, obj.l1),
            (self.l2, obj.l2),
            (self.blur, obj.blur),
            (self.diversity, lambda: obj.diversity(layer)),
        )
        for weight, make in penalties:
            if weight:
                full = full - float(weight) * make()
        return full, target

    def to_json(self, agent: Agent, real_frames: np.ndarray | None) -> dict[str, Any]:
        """What ``settings.json`` records of every layer (an earlier layer's outputs resume only if it is equal)."""
        transforms = self.engine.transforms
        return {
            "format": SETTINGS_FORMAT,
            "agent": {"arch": agent.arch.name, "params": agent.params_digest()},
            "facets": self.facets,
            "steps": self.steps,
            "thresholds": sorted({*self.thresholds, self.steps}),
            "lr": self.lr,
            "basis": self.basis,
            "color_matrix": self.matrix.tolist() if self.decorrelate else None,
            "transforms": dataclasses.asdict(transforms) if transforms is not None else None,
            "seed": self.seed,
            "real_frames": array_digest([real_frames]) if real_frames is not None else None,
            # The frames are part of a context's program (unlike the percentiles' frames), so they are named too.
            "context": None
            if self.context is None
            else dataclasses.asdict(self.context) | {"frames": array_digest([real_frames])},
        }


def visualize_layers(
    agent: Agent,
    layers: Sequence[str] | str,
    channels: str | int | Sequence[int] | None = "all",
    settings: FeatvizSettings | None = None,
    *,
    out_dir: str | Path,
    real_frames=None,
    resume: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Visualize ``channels`` of each of ``layers`` as ``settings`` say (default `FeatvizSettings()`); write PNGs,
    a contact sheet and an .npz per layer.

    With ``real_frames`` (uint8 (N, 64, 64, 3)) each layer reports the fraction of channels whose best facet
    beats the 99th and 99.9th percentile of the objective on real frames; a context pastes its patches into them.
    Writes ``out_dir/<layer>/``: ``channel_<c>.png`` (facets side by side, upscaled ``scale``×), ``sheet.png``,
    ``images.npz`` (images (T, C, K, 64, 64, 3) at each kept step, or patches with a context; values (T, C, K),
    losses, channels, thresholds, percentiles) and ``settings.json``, and with a context ``context_<c>.png`` (the
    patch in the first frames); finished chunks live in ``chunks/`` until the layer is done. ``resume`` False
    recomputes what exists. Returns ``{"out_dir", "layers": {layer: summary}}``; ``progress`` shows a bar over
    the channels and each layer's summary line. In a multi-process job every process must call this with the same
    arguments; process 0 writes (resuming needs ``out_dir`` on storage every process sees).
    """
    settings = settings if settings is not None else FeatvizSettings()
    if isinstance(layers, str):
        layers = [s.strip() for s in layers.split(",") if s.strip()]
    layers = list(agent.check_layers(layers))
    if not layers:
        raise JaxinterpError("no layers to visualize; pass layer names (see agent.layer_names)")
    if real_frames is not None:
        real_frames = np.asarray(check_obs(real_frames))
    if settings.context is not None and real_frames is None:
        raise JaxinterpError(
            "a context pastes patches into real frames: pass `real_frames` (the agent's play)"
        )
    out_dir = Path(out_dir)
    common = settings.to_json(agent, real_frames)
    plans = [_plan(agent, layer, channels, settings, common, real_frames, out_dir) for layer in layers]

    writer = jax.process_index() == 0
    summary: dict[str, Any] = {"out_dir": str(out_dir), "layers": {}}
    total = sum(len(p.channels) for p in plans)
    with progress_bar(total, desc="featviz", unit="ch", enabled=progress and writer) as bar:
        shared = _Shared(
            agent, jax.random.key(settings.seed), real_frames, settings.scale, resume, writer, bar
        )
        for plan in plans:
            layer_summary = summary["layers"][plan.layer] = _one_layer(shared, plan)
            if progress and writer:
                bar.write(_summary_line(plan.layer, layer_summary))
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
    real_frames: np.ndarray | None
    scale: int
    resume: bool
    writer: bool
    bar: tqdm


def _plan(
    agent, layer, channels, settings: FeatvizSettings, common, real_frames, out_dir: Path
) -> _LayerPlan:
    """``layer``'s plan, every input checked (nothing is written before all layers' plans are made)."""
    full, target = settings.objectives(layer)
    full.validate(agent)
    n = full.num_indices(agent)
    chans = parse_channels(channels, n, f"layer {layer!r}") if n is not None else [0]
    layer_settings = common | {"layer": layer, "objective": full.description, "measure": target.description}
    # Through JSON and back (tuples become lists), so it compares equal to what settings.json holds.
    layer_settings = json.loads(json.dumps(layer_settings))
    context = None if settings.context is None else settings.context.build(agent, layer, real_frames)
    config = dataclasses.replace(settings.engine, measure=target, context=context)
    return _LayerPlan(
        layer, full, target, chans, layer_settings, config, out_dir / report_images.file_stem(layer)
    )


def _one_layer(shared: _Shared, plan: _LayerPlan) -> dict[str, Any]:
    """Resume what exists, optimize the channels still missing (chunk by chunk), then write the layer's outputs."""
    folder, chans = plan.folder, plan.channels
    done, finished = _resume(shared, plan)
    if finished is not None:
        shared.bar.update(len(chans))
        return _layer_summary(plan.layer, finished, folder, skipped=True, seconds=0.0)
    todo = [c for c in chans if c not in done]
    shared.bar.update(len(chans) - len(todo))

    visualize = make_visualize(shared.agent, plan.full, plan.config)
    start = time.perf_counter()
    for s in range(0, len(todo), visualize.chunk_channels):
        part = todo[s : s + visualize.chunk_channels]
        r = visualize(shared.key, part)
        arrays = {"images": r.images, "values": r.values, "losses": r.losses, "channels": r.channels}
        if shared.writer:
            write_npz(folder / "chunks" / f"chunk_{part[0]:05d}_{part[-1]:05d}.npz", **arrays)
        done |= _per_channel(arrays)
        shared.bar.update(len(part))
    seconds = time.perf_counter() - start

    arrays = {
        "images": np.stack([done[c]["images"] for c in chans], axis=1),
        "values": np.stack([done[c]["values"] for c in chans], axis=1),
        "losses": np.stack([done[c]["losses"] for c in chans]),
        "channels": np.asarray(chans, np.int64),
        "thresholds": np.asarray(plan.config.kept, np.int64),
    }
    if shared.real_frames is not None:
        arrays["percentiles"] = real_percentiles(shared.agent, plan.target, chans, shared.real_frames)
        arrays["percentile_q"] = np.asarray(PERCENTILES, np.float32)
    if shared.writer:
        write_layer_outputs(folder, plan.target.description, arrays, shared.scale, plan.config.context)
        write_npz(folder / "images.npz", **arrays)
        for path in (folder / "chunks").glob("chunk_*.npz"):
            path.unlink()
        if (folder / "chunks").exists() and not any((folder / "chunks").iterdir()):
            (folder / "chunks").rmdir()
    rate = len(todo) * plan.config.steps / seconds if todo and seconds > 0 else None
    return _layer_summary(
        plan.layer, arrays, folder, skipped=False, seconds=seconds, computed=len(todo), rate=rate
    )


def _resume(shared: _Shared, plan: _LayerPlan) -> tuple[dict[int, dict[str, np.ndarray]], dict | None]:
    """(the channels already optimized with these settings, the finished layer's arrays if they are all asked for).

    Outputs made with other settings are stale: removed before the new settings land."""
    folder = plan.folder
    settings_path, final_path, chunk_dir = folder / "settings.json", folder / "images.npz", folder / "chunks"
    same = shared.resume and settings_path.exists() and json.loads(settings_path.read_text()) == plan.settings
    done: dict[int, dict[str, np.ndarray]] = {}
    if same and final_path.exists():
        with np.load(final_path) as z:
            if z["channels"].tolist() == plan.channels:
                return done, {k: z[k] for k in z.files}
            done |= _per_channel(z)  # another channel selection with the same settings: reuse its channels
    if shared.writer:
        folder.mkdir(parents=True, exist_ok=True)
        if not same:
            for old in [final_path, *(chunk_dir.glob("*.npz") if chunk_dir.exists() else ())]:
                old.unlink(missing_ok=True)
        write_json(settings_path, plan.settings)
        chunk_dir.mkdir(exist_ok=True)
    for path in sorted(chunk_dir.glob("chunk_*.npz")) if (same and chunk_dir.exists()) else ():
        with np.load(path) as z:
            done |= _per_channel(z)
    return done, None


def _per_channel(z) -> dict[int, dict[str, np.ndarray]]:
    """{channel: its images (T, K, ...), values (T, K), losses (K, steps)} from a chunk or a layer's arrays."""
    return {
        int(c): {"images": z["images"][:, j], "values": z["values"][:, j], "losses": z["losses"][j]}
        for j, c in enumerate(np.asarray(z["channels"]).tolist())
    }


def write_layer_outputs(
    folder: Path, description: str, arrays: dict, scale: int, context: Context | None = None
) -> None:
    """A layer's ``channel_<c>.png`` (facets side by side), ``sheet.png`` titled ``description`` (the objective)
    and, with a context, ``context_<c>.png``, from the arrays of ``images.npz``."""
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
        title=f"{description} (value after {arrays['thresholds'][-1]} steps)",
    )


@jax.jit
def _paste(context: Context, patches: jax.Array) -> jax.Array:
    return context.paste(patches)


def _in_context(context: Context, images: np.ndarray, frames: int) -> np.ndarray:
    """(C, K, S, S, 3) patches -> (C, K, frames, 64, 64, 3): each in the context's first frames, at its place."""
    c, k = images.shape[:2]
    pasted = np.asarray(_paste(context, jnp.asarray(images.reshape(c * k, *images.shape[2:]))))
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


def _summary_line(layer: str, s: dict[str, Any]) -> str:
    """One line on a finished layer: its channels, mean value and how many images beat real play."""
    line = f"{layer}: {len(s['channels'])} channels, mean value {s['mean_value']:.3g}"
    if s.get("beat_p99") is not None:
        line += f"; beat real-frame p99 {s['beat_p99']:.0%}, p99.9 {s['beat_p999']:.0%}"
        if s["nonpositive_p999"]:
            line += (
                f"; {s['nonpositive_p999']} channels' measure is <= 0 on 99.9% of real frames (easy to beat)"
            )
    return line
