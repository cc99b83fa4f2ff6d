"""One-line entry points, lucent's ``render_vis`` made whole: ``jaxinterp.visualize``,
``jaxinterp.dataset_examples``, ``jaxinterp.attribute`` and ``jaxinterp.intervene``, each returning a result that
holds the pictures and the numbers and writes them with ``.save(dir)`` as the CLI would. The agent defaults to the
shipped one. (``dataset_examples``, not ``examples``: that name is the subpackage's.)"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from jaxinterp.cache import cache_dir
from jaxinterp.errors import JaxinterpError
from jaxinterp.models.agent import Agent

__all__ = [
    "DEFAULT_LAYER",
    "PLAY_FRAMES",
    "Attributions",
    "Examples",
    "Intervention",
    "Visualization",
    "attribute",
    "cache_dir",
    "color_stats",
    "dataset_examples",
    "intervene",
    "visualize",
]

DEFAULT_LAYER = "conv_seqs.2.res_block1"
"""The IMPALA CNN's last stage: the layer whose channels the report's figures discuss first."""
PLAY_FRAMES = 4096
"""Frames of the agent's own play recorded when no dataset is given (about two minutes on a 2-core CPU)."""

AgentLike = Agent | str | os.PathLike | None


def _agent(agent: AgentLike = None) -> Agent:
    """An `Agent` as given, or loaded from a path (weights, an orbax directory, a training run), or the shipped
    default agent for None."""
    if isinstance(agent, Agent):
        return agent
    from jaxinterp.weights.store import default_checkpoint, load_agent

    return load_agent(default_checkpoint() if agent is None else agent)


def _frames(agent: Agent, source, *, seed: int):
    """A dataset (path or `Dataset`), or uint8 frames; None records ``PLAY_FRAMES`` of the agent's own play."""
    if source is None:
        from jaxinterp.rl.export import agent_frames

        return agent_frames(agent, PLAY_FRAMES, seed=seed)
    if isinstance(source, str | os.PathLike):
        from jaxinterp.envs.dataset import Dataset

        return Dataset(source)
    return source


def color_stats(
    agent: Agent,
    checkpoint: str | os.PathLike | None = None,
    *,
    frames: np.ndarray | None = None,
    seed: int = 0,
):
    """The colour statistics feature visualization decorrelates with: shipped beside the weights
    (``<checkpoint>.color.json``), else fitted once on ``frames`` (default: the agent's own play) and cached under
    ``~/.cache/jaxinterp/color`` by the weights' digest (a training run that moves on gets fresh ones)."""
    from jaxinterp.featviz.param import fit_color_stats, load_color_stats, save_color_stats
    from jaxinterp.rl.export import COLOR_FRAMES, agent_frames

    beside = Path(checkpoint).with_suffix(".color.json") if checkpoint is not None else None
    if beside is not None and beside.exists():
        return load_color_stats(beside)
    cached = cache_dir() / "color" / f"{agent.params_digest()}.json"
    if cached.exists():
        return load_color_stats(cached)
    stats = fit_color_stats(agent_frames(agent, COLOR_FRAMES, seed=seed) if frames is None else frames)
    cached.parent.mkdir(parents=True, exist_ok=True)
    save_color_stats(cached, stats.matrix, stats.mean)
    return stats


@dataclasses.dataclass(frozen=True)
class Visualization:
    """Feature visualizations of channels of one layer: ``images`` (C, K, 64, 64, 3) floats in [0, 1] (K facets)
    and ``values`` (C, K), the objective without its penalties; the engine's `Result` in ``.result``."""

    layer: str
    objective: str
    channels: np.ndarray
    images: np.ndarray
    values: np.ndarray
    result: object
    scale: int

    def image(self, channel: int) -> np.ndarray:
        """uint8 picture of one channel's facets side by side, upscaled as the CLI's PNGs."""
        from jaxinterp import render

        row = int(np.flatnonzero(self.channels == channel)[0]) if channel in self.channels else None
        if row is None:
            raise JaxinterpError(
                f"channel {channel} was not visualized; these were: {self.channels.tolist()}"
            )
        return render.side_by_side(self.images[row], scale=self.scale)

    def save(self, out: str | os.PathLike) -> Path:
        """``out``/``channel_<c>.png``, ``sheet.png`` and ``images.npz``, as ``jaxinterp visualize`` writes a layer."""
        from jaxinterp import atomic
        from jaxinterp.report.visualizations import write_layer_outputs

        out = Path(out)
        arrays = {
            "images": self.result.images,
            "values": self.result.values,
            "losses": self.result.losses,
            "channels": np.asarray(self.channels, np.int64),
            "thresholds": np.asarray(self.result.thresholds, np.int64),
        }
        write_layer_outputs(out, self.objective, arrays, self.scale)
        atomic.write_npz(out / "images.npz", **arrays)
        return out

    def _repr_png_(self) -> bytes:
        from jaxinterp import render

        return _png(
            render.contact_sheet(np.stack([render.side_by_side(ims, gap=2) for ims in self.images]), scale=2)
        )


def visualize(
    agent: AgentLike = None,
    layer: str = DEFAULT_LAYER,
    channels="all",
    *,
    objective: str = "channel",
    steps: int | None = None,
    facets: int = 1,
    diversity: float = 0.0,
    tv: float = 0.0,
    l2: float = 0.0,
    seed: int = 0,
    progress: bool = True,
) -> Visualization:
    """Feature visualization of ``channels`` of ``layer`` in one jitted call, as ``jaxinterp visualize`` makes it
    (Fourier images decorrelated with the agent's colour statistics, standard transforms): the same images for the
    same settings and seed. ``objective`` as the CLI's ``--objective`` (``"channel"``, ``"neuron"``, ...)."""
    import jax

    from jaxinterp import progress as progress_lib
    from jaxinterp.featviz.engine import DEFAULT_STEPS, make_visualize
    from jaxinterp.models.agent import parse_channels
    from jaxinterp.report.visualizations import FeatvizSettings

    checkpoint = None if isinstance(agent, Agent) else _checkpoint_path(agent)
    agent = _agent(agent)
    stats = color_stats(agent, checkpoint, seed=seed)
    settings = FeatvizSettings(
        objective=objective,
        steps=steps or DEFAULT_STEPS,
        facets=facets,
        diversity=diversity,
        tv=tv,
        l2=l2,
        seed=seed,
        color_matrix=stats.matrix,
    )
    layer = agent.check_layers([layer])[0]
    full, target = settings.objectives(layer)
    full.validate(agent)
    chosen = parse_channels(channels, full.num_indices(agent) or 1, f"layer {layer!r}")
    run = make_visualize(agent, full, dataclasses.replace(settings.engine, measure=target))
    with progress_lib.bar(len(chosen), desc="featviz", unit="ch", enabled=progress) as bar:
        result = run(jax.random.key(seed), chosen, bar=bar)
    return Visualization(
        layer, target.description, result.channels, result.final, result.values[-1], result, settings.scale
    )


def _checkpoint_path(agent: AgentLike):
    """The weights file an agent was given as (None: the shipped default's), for its colour statistics."""
    from jaxinterp.weights.store import default_checkpoint

    return default_checkpoint() if agent is None else agent


@dataclasses.dataclass(frozen=True)
class Examples:
    """Dataset examples of every channel of a layer (`jaxinterp.examples.find_examples`' result, in ``.result``)."""

    result: object
    source: object

    def save(self, out: str | os.PathLike) -> list[Path]:
        """One sheet per channel (top and least activating patches, values, the object under each patch when the
        source is a dataset with object maps) and an overview, as ``jaxinterp examples`` writes them."""
        from jaxinterp.report.example_sheets import write_sheets

        maps = self.source if hasattr(self.source, "iter_chunks") else None
        return write_sheets(self.result, Path(out), object_maps=maps)

    def _repr_png_(self) -> bytes:
        from jaxinterp.report.example_sheets import overview_sheet

        return _png(overview_sheet(self.result))


def dataset_examples(
    agent: AgentLike = None,
    layer: str = DEFAULT_LAYER,
    *,
    dataset=None,
    channels="all",
    k: int | None = None,
    diversity: float = 0.0,
    seed: int = 0,
    progress: bool = True,
) -> Examples:
    """The ``k`` real observation patches that excite each channel of ``layer`` most (kept diverse by a cosine
    penalty of weight ``diversity``), over ``dataset`` (a rollout directory, a `Dataset` or uint8 frames; default:
    the agent's own play)."""
    from jaxinterp.examples.find import DEFAULT_K, find_examples

    agent = _agent(agent)
    source = _frames(agent, dataset, seed=seed)
    n = agent.layer_shapes[agent.check_layers([layer])[0]][-1]
    from jaxinterp.models.agent import parse_channels

    chosen = None if channels == "all" else parse_channels(channels, n, f"layer {layer!r}")
    result = find_examples(
        agent, layer, source, channels=chosen, k=k or DEFAULT_K, diversity=diversity, progress=progress
    )
    return Examples(result, source)


@dataclasses.dataclass(frozen=True)
class Attributions:
    """Per-frame attributions of ``target`` to ``layer`` (pixels for ``"input"``): ``values`` (N, *layer shape)."""

    agent: Agent
    frames: np.ndarray
    values: np.ndarray
    layer: str
    target: int | str
    method: str

    def save(self, out: str | os.PathLike) -> Path:
        """The frames above their saliency overlays (PNG) and the values (.npz), as ``jaxinterp attribution``."""
        from jaxinterp import atomic
        from jaxinterp.report.overlays import write_saliency

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        stem = f"{self.method}_{str(self.target).replace(':', '')}_{self.layer}"
        png = write_saliency(out / f"{stem}.png", self.agent, self.frames, self.values, layer=self.layer)
        atomic.write_npz(out / f"{stem}.npz", frames=self.frames, attributions=self.values)
        return png


def attribute(
    agent: AgentLike = None,
    frames=None,
    *,
    target: int | str = "value",
    layer: str = "input",
    method: str = "ig",
    seed: int = 0,
) -> Attributions:
    """Attribution of the value (or action ``target``'s logit) to ``layer``'s activations or to the pixels, per
    frame: integrated gradients (``"ig"``) or gradient × activation (``"gxa"``). ``frames`` are uint8 frames
    (default: 8 frames of the agent's own play)."""
    from jaxinterp.examples.attribution import gradient_x_activation, integrated_gradients

    agent = _agent(agent)
    if method not in ("ig", "gxa"):
        raise JaxinterpError(f"attribution method {method!r} is not one of ig, gxa")
    if frames is None:
        from jaxinterp.rl.export import agent_frames

        frames = agent_frames(agent, 8 * 64, seed=seed)[-64::8]  # eight games, eight steps in
    frames = np.asarray(frames)
    fn = integrated_gradients if method == "ig" else gradient_x_activation
    out = fn(agent, frames, target, layer=layer)
    return Attributions(agent, frames, np.asarray(getattr(out, "values", out)), layer, target, method)


@dataclasses.dataclass(frozen=True)
class Intervention:
    """A played sweep (`jaxinterp.interventions.Sweep` in ``.sweep``): one row per edit in ``.rows``."""

    sweep: object

    @property
    def rows(self) -> list[dict]:
        return self.sweep.rows

    def table(self) -> str:
        from jaxinterp.report.intervention_figures import table_markdown

        return table_markdown(self.rows)

    def save(self, out: str | os.PathLike) -> Path:
        """results.json, table.md, effects.png, each edit's paths over the levels and GIFs, as ``jaxinterp
        intervene`` writes them."""
        from jaxinterp.report.intervention_figures import write_sweep

        return write_sweep(out, self.sweep)


def intervene(
    agent: AgentLike = None, edits=(), *, levels: int = 64, seed: int = 0, **options
) -> Intervention:
    """The clean agent and each of ``edits`` (strings such as ``"conv_seqs.2.res_block1:7=0"``) played on the same
    ``levels`` unseen levels at once, and compared. ``options`` as `jaxinterp.interventions.run_sweep`."""
    from jaxinterp.interventions import run_sweep

    edits = [edits] if isinstance(edits, str) else list(edits)
    return Intervention(run_sweep(_agent(agent), edits, num_levels=levels, seed=seed, **options))


def _png(image: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()
