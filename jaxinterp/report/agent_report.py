"""One report per agent: for each chosen layer, every channel's feature visualization beside its top dataset
patches and the game objects it responds to, as a static HTML page (``index.html``) with its images and numbers.

It runs the analyses of a rollout dataset (`visualize_layers`, `find_examples`, `spatial_examples`,
`object_response`) and puts their answers to "what does this channel see?" side by side, so that a reader can check one against the other.
Each step is recorded in ``report.json`` when done, so an interrupted report resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxinterp import render as images
from jaxinterp.atomic import write_json, write_text
from jaxinterp.envs.dataset import Dataset
from jaxinterp.errors import JaxinterpError
from jaxinterp.examples.find import DEFAULT_K, find_examples
from jaxinterp.examples.object_response import ObjectResponse, load_npz, object_response
from jaxinterp.examples.spatial import spatial_examples
from jaxinterp.featviz import transforms as tf
from jaxinterp.featviz.engine import DEFAULT_STEPS
from jaxinterp.models.agent import Agent
from jaxinterp.report.example_sheets import top_strip, write_sheets, write_spatial
from jaxinterp.report.latents import section_html, write_sae_section
from jaxinterp.report.object_tables import STRONG, objects_html, write_object_response
from jaxinterp.report.visualizations import FeatvizSettings, visualize_layers

__all__ = [
    "DEFAULT_DIVERSITY",
    "REAL_FRAMES",
    "REPORT_FORMAT",
    "write_agent_report",
]

REPORT_FORMAT = "jaxinterp.report/4"  # 2: the centre-neuron view; 3: its smaller jitter; 4: spatial mosaics
DEFAULT_DIVERSITY = 0.5
"""Examples are chosen with this cosine-similarity penalty: Heist frames look alike, and plain top-k fills a
channel's sheet with one object seen from neighbouring positions."""
REAL_FRAMES = 1024
"""Dataset frames (evenly spaced) each visualization is measured against: its real-frame percentiles."""
TOP_OBJECTS = 3
VIEWS = {
    "featviz": ("channel", tf.standard_transforms()),
    "neuron": ("neuron", tf.Transform(jitters=tf.NEURON_JITTERS)),
}
"""Each channel is visualized twice (output folder -> objective, transforms): driving its spatial mean up, and at
the centre position only. Deep channels see most of the frame from every position, so an image that raises the
mean must repeat an object everywhere it matters, which it often cannot: a last-stage channel's mean can stay below
0 however many steps run while its centre neuron goes above 0 (measured: benchmarks/HISTORY.md). The
centre view jitters less (`transforms.NEURON_JITTERS`), so that the position stays under what the image draws."""
THUMB_PIXELS = 128
"""Height of the images in the per-channel table (the files themselves are larger: click to open)."""


def write_agent_report(
    agent: Agent,
    dataset: Dataset,
    out_dir: str | Path,
    *,
    layers: Sequence[str] | None = None,
    k: int = DEFAULT_K,
    diversity: float = DEFAULT_DIVERSITY,
    steps: int = DEFAULT_STEPS,
    color_matrix: np.ndarray | None = None,
    real_frames: int = REAL_FRAMES,
    seed: int = 0,
    source: str = "",
    sae: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Analyse ``layers`` (default: each stage's output, ``agent.arch.stage_outputs``) of ``agent`` over the rollout
    ``dataset`` and write ``out_dir``: ``featviz/``, ``examples/`` and ``objects/`` as their own commands write
    them, ``report.json`` (settings, per-channel numbers) and ``index.html``. ``source`` names the agent on the page.
    ``sae`` (an SAE directory) adds a section with a row per latent (`jaxinterp.report.latents`).
    Rerunning with the same arguments resumes; other settings in the same ``out_dir`` are refused."""
    layers = _check_layers(agent, dataset, layers)
    out = Path(out_dir)
    settings = {
        "format": REPORT_FORMAT,
        "agent": {"arch": agent.arch.name, "params": agent.params_digest(), "source": source},
        "dataset": {"path": str(Path(dataset.path).resolve()), "frames": len(dataset)},
        "layers": layers,
        "k": k,
        "diversity": diversity,
        "steps": steps,
        "real_frames": real_frames,
        "seed": seed,
        "color_matrix": None if color_matrix is None else np.asarray(color_matrix, np.float32).tolist(),
    }
    if sae is not None:  # only then, so that reports written without an SAE resume as before
        settings["sae"] = str(Path(sae).resolve())
    state = _open_state(out, json.loads(json.dumps(settings)))

    real = dataset.evenly_spaced(real_frames)["frames"]
    featviz = FeatvizSettings(steps=steps, color_matrix=color_matrix, seed=seed)
    views = {
        view: visualize_layers(
            agent,
            layers,
            "all",
            dataclasses.replace(featviz, objective=objective, transforms=transforms),
            out_dir=out / view,
            real_frames=real,
            progress=progress,
        )["layers"]
        for view, (objective, transforms) in VIEWS.items()
    }
    for layer in layers:
        _analyse_layer(agent, layer, dataset, out, state, k=k, diversity=diversity, progress=progress)
    sections = [
        _layer_numbers(
            agent, layer, {view: views[view][layer] for view in VIEWS}, state["max_in_play"][layer], out
        )
        for layer in layers
    ]
    state["layers"] = sections
    if sae is not None and "sae" not in state["done"]:
        state["sae"] = write_sae_section(
            agent,
            sae,
            dataset,
            out,
            steps=steps,
            k=k,
            diversity=diversity,
            color_matrix=color_matrix,
            real_frames=real,
            seed=seed,
            progress=progress,
        )
        _mark_done(out, state, "sae")
    write_json(out / "report.json", state)
    return write_text(out / "index.html", _page(settings, sections, state.get("sae")))


def _check_layers(agent: Agent, dataset: Dataset, layers: Sequence[str] | None) -> list[str]:
    """The layers to report on, checked: spatial layers of ``agent``, over a dataset that has frames."""
    layers = list(agent.check_layers(layers if layers is not None else agent.arch.stage_outputs))
    if not layers:
        raise JaxinterpError("no layers to report on; pass layer names (see `jaxinterp info`)")
    dense = [name for name in layers if name not in agent.conv_layer_names]
    if dense:
        raise JaxinterpError(
            f"the report covers spatial layers (objects sit at positions); {', '.join(dense)} has none: "
            f"use `jaxinterp examples` for it, or one of {', '.join(agent.conv_layer_names)}"
        )
    if len(dataset) == 0:
        raise JaxinterpError(
            f"the dataset {dataset.path} has no frames; record some with `jaxinterp rollout`"
        )
    return layers


def _analyse_layer(
    agent: Agent,
    layer: str,
    dataset: Dataset,
    out: Path,
    state: dict,
    *,
    k: int,
    diversity: float,
    progress: bool,
) -> None:
    """``layer``'s examples, spatial mosaics and object responses, each step skipped if an earlier run did it."""
    stem = images.file_stem(layer)
    if f"examples:{layer}" not in state["done"]:
        result = find_examples(agent, layer, dataset, k=k, diversity=diversity, progress=progress)
        write_sheets(result, out / "examples", object_maps=dataset)
        for j, fid in enumerate(result.ids):
            images.save_png(out / "examples" / f"{stem}_{int(fid):04d}_top.png", top_strip(result, j))
        # Each channel's highest value at any position of any frame: <= 0 means it never fired in play.
        state["max_in_play"][layer] = result.top.values[:, 0].tolist()
        _mark_done(out, state, f"examples:{layer}")
    if f"spatial:{layer}" not in state["done"]:
        write_spatial(spatial_examples(agent, layer, dataset, progress=progress), out / "examples")
        _mark_done(out, state, f"spatial:{layer}")
    if f"objects:{layer}" not in state["done"]:
        response = object_response(agent, layer, dataset, progress=progress)
        write_object_response(response, out / "objects" / stem)
        _mark_done(out, state, f"objects:{layer}")


def _open_state(out: Path, settings: dict) -> dict:
    """``report.json`` of an earlier run with the same settings (to resume), else a fresh state."""
    path = out / "report.json"
    if path.exists():
        try:
            state = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise JaxinterpError(f"{path} is corrupt ({e}); delete it, or report to another --out") from e
        old = state.get("settings") or {}
        differ = [k for k in settings if old.get(k) != settings[k]]
        if differ:
            raise JaxinterpError(
                f"{out} holds a report made with another {', '.join(differ)} (the weights of a training run "
                "change as it trains); rerun with the same settings to resume, or choose another --out"
            )
        return state
    out.mkdir(parents=True, exist_ok=True)
    state = {"settings": settings, "done": [], "max_in_play": {}}
    write_json(path, state)
    return state


def _mark_done(out: Path, state: dict, step: str) -> None:
    state["done"].append(step)
    write_json(out / "report.json", state)


def _layer_numbers(
    agent: Agent, layer: str, featviz: dict[str, dict[str, Any]], max_in_play: list[float], out: Path
) -> dict[str, Any]:
    """What the page shows of one layer, per channel: images and their values against real frames (per view of
    `VIEWS`), objects, and the channel's maximum in play."""
    stem = images.file_stem(layer)
    response: ObjectResponse = load_npz(out / "objects" / stem / "objects.npz")
    channels = []
    for f, (c, ranked) in enumerate(zip(response.ids.tolist(), response.ranked(TOP_OBJECTS), strict=True)):
        views = {}
        for view, summary in featviz.items():
            v = summary["channels"].index(c)
            views[view] = {
                "value": summary["values"][v],
                "real_p99": summary["p99"][v],
                "real_p999": summary["p999"][v],
                "png": f"{view}/{stem}/channel_{c:03d}.png",
            }
        channels.append(
            {
                "channel": c,
                **views,
                "max_in_play": max_in_play[f],
                "objects": [[o, z] for o, z in ranked if np.isfinite(z)],
                "examples_png": f"examples/{stem}_{c:04d}.png",
                "top_png": f"examples/{stem}_{c:04d}_top.png",
                "spatial_png": f"examples/{stem}_{c:04d}_spatial.png",
            }
        )
    return {
        "layer": layer,
        "shape": list(agent.layer_shapes[layer]),
        **{
            view: {
                "beat_p99": summary["beat_p99"],
                "beat_p999": summary["beat_p999"],
                "sheet": f"{view}/{stem}/sheet.png",
            }
            for view, summary in featviz.items()
        },
        "never_fired": sum(ch["max_in_play"] <= 0 for ch in channels),
        "strong_objects": sum(bool(ch["objects"]) and ch["objects"][0][1] >= STRONG for ch in channels),
        "frames": response.num_frames,
        "examples_overview": f"examples/{stem}_overview.png",
        "spatial_sheet": f"examples/{stem}_spatial.png",
        "objects_png": f"objects/{stem}/objects.png",
        "objects_md": f"objects/{stem}/objects.md",
        "channels": channels,
    }


_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; } td, th { border-top: 1px solid #ddd; padding: 4px 8px; vertical-align: top; }
th { text-align: left; } img { image-rendering: pixelated; } .num { font-variant-numeric: tabular-nums; }
.strong { font-weight: bold; } nav a { margin-right: 1em; }
"""


def _page(settings: dict, sections: list[dict], sae: dict | None = None) -> str:
    e = html.escape
    agent, data = settings["agent"], settings["dataset"]
    parts = [
        "<!doctype html><meta charset='utf-8'>",
        f"<title>jaxinterp report: {e(agent['source'] or agent['arch'])}</title><style>{_STYLE}</style>",
        f"<h1>What the channels of {e(agent['source'] or 'this agent')} see</h1>",
        (
            f"<p>{e(agent['arch'])} (weights {e(agent['params'])}); {data['frames']:,} frames of play from "
            f"<code>{e(data['path'])}</code>. Per channel: its feature visualizations ({settings['steps']} steps; the "
            "image that drives the channel's mean activation up, and the one that drives it up at the centre "
            "position only), its top dataset examples (diversity "
            f"{settings['diversity']:g}; click for the full sheet with the least activating ones), its spatial mosaic "
            "(at every position of the screen, the piece of the frame that excites it most there; opaque where it "
            "responds most) and the game objects it responds to (position-matched z-scores; "
            f"<b>bold</b>: z &ge; {STRONG:g}).</p>"
        ),
        "<nav>"
        + "".join(f"<a href='#{e(images.file_stem(s['layer']))}'>{e(s['layer'])}</a>" for s in sections)
        + ("<a href='#sae'>SAE latents</a>" if sae else ""),
        "</nav>",
    ]
    for s in sections:
        shape = " × ".join(map(str, s["shape"]))
        n = len(s["channels"])
        parts += [
            f"<h2 id='{e(images.file_stem(s['layer']))}'>{e(s['layer'])} <small>({shape})</small></h2>",
            (
                f"<p>Feature visualizations beat the channel's real-frame 99th / 99.9th percentile for "
                f"{s['featviz']['beat_p99']:.0%} / {s['featviz']['beat_p999']:.0%} of the {n} channels (mean), "
                f"{s['neuron']['beat_p99']:.0%} / {s['neuron']['beat_p999']:.0%} (centre); {s['never_fired']} "
                f"channels never exceed 0 at any position of the {s['frames']:,} frames; {s['strong_objects']} "
                "respond strongly to an object. "
                f"<a href='{s['featviz']['sheet']}'>visualization sheet</a> · "
                f"<a href='{s['neuron']['sheet']}'>centre-neuron sheet</a> · "
                f"<a href='{s['examples_overview']}'>examples overview</a> · "
                f"<a href='{s['spatial_sheet']}'>spatial mosaics</a> · "
                f"<a href='{s['objects_png']}'>objects heatmap</a> · <a href='{s['objects_md']}'>objects table</a></p>"
            ),
            (
                "<table><tr><th>channel</th><th>wants to see (mean)</th><th>(centre)</th>"
                "<th>responds to in play (top examples)</th><th>where (spatial mosaic)</th><th>objects (z)</th>"
                "<th class='num'>image / real p99.9: mean; centre</th>"
                "<th class='num'>max in play (any position)</th></tr>"
            ),
        ]
        for ch in s["channels"]:
            objs = objects_html(ch["objects"])
            mean, centre = ch["featviz"], ch["neuron"]
            parts.append(
                f"<tr><td class='num'>{ch['channel']}</td>"
                + "".join(
                    f"<td><a href='{v['png']}'><img src='{v['png']}' height={THUMB_PIXELS}></a></td>"
                    for v in (mean, centre)
                )
                + f"<td><a href='{ch['examples_png']}'><img src='{ch['top_png']}' height={THUMB_PIXELS // 2}></a></td>"
                f"<td><a href='{ch['spatial_png']}'><img src='{ch['spatial_png']}' height={THUMB_PIXELS}></a></td>"
                f"<td>{objs}</td>"
                f"<td class='num'>{mean['value']:.3g} / {mean['real_p999']:.3g};<br>"
                f"{centre['value']:.3g} / {centre['real_p999']:.3g}</td>"
                f"<td class='num'>{ch['max_in_play']:.3g}</td></tr>"
            )
        parts.append("</table>")
    if sae:
        parts.append(section_html(sae, THUMB_PIXELS))
    return "\n".join(parts) + "\n"
