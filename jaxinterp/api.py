"""One-line entry points, lucent's ``render_vis`` made whole: ``jaxinterp.visualize``,
``jaxinterp.dataset_examples``, ``jaxinterp.attribute`` and ``jaxinterp.intervene``, each returning a result that
holds the pictures and the numbers and writes them with ``.save(dir)`` as the CLI would. The agent defaults to the
shipped one. (``dataset_examples``, not ``examples``: that name is the subpackage's.)"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from jaxinterp.errors import JaxinterpError
from jaxinterp.models.agent import Agent

__all__ = [
    "DEFAULT_LAYER",
    "PLAY_FRAMES",
    "Attributions",
    "Examples",
    "Intervention",
    "attribute",
    "dataset_examples",
    "intervene",
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
