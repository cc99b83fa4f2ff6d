"""The report's SAE section: one row per latent, as the channel rows are (its feature visualization at the centre
position, top dataset examples, spatial mosaic, object response), plus the held-out F1 of the classes it was
chosen for (`jaxinterp sae eval`). Written under ``out/sae/``; returns what the page shows."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from jaxinterp import render as images
from jaxinterp.envs.dataset import Dataset
from jaxinterp.examples.find import find_examples
from jaxinterp.examples.object_response import object_response
from jaxinterp.examples.spatial import spatial_examples
from jaxinterp.featviz import transforms as tf
from jaxinterp.models.agent import Agent
from jaxinterp.report.example_sheets import top_strip, write_sheets, write_spatial
from jaxinterp.report.object_tables import objects_html, write_object_response
from jaxinterp.report.visualizations import FeatvizSettings, visualize_layers
from jaxinterp.sae.features import latent_feature, latent_objective
from jaxinterp.sae.files import load_sparsity
from jaxinterp.sae.runs import EVAL_FILE, load_member, trained_arch

__all__ = ["DEFAULT_LATENTS", "chosen_latents", "section_html", "write_sae_section"]

DEFAULT_LATENTS = 32
"""Latents shown: each object class's best latent (held-out F1), then the most frequent ones, up to this many."""
TOP_OBJECTS = 3


def chosen_latents(sae_dir: Path, d_sae: int, n: int = DEFAULT_LATENTS) -> list[int]:
    """The latents ``eval.json`` names as some class's best, then the most frequently firing, ``n`` in all."""
    picked: list[int] = []
    evaluation = sae_dir / EVAL_FILE
    if evaluation.exists():
        objects = json.loads(evaluation.read_text())["objects"]
        picked = [
            v["latent"] for v in objects.values() if v["latent_f1"] == v["latent_f1"] and v["latent_f1"] > 0
        ]
    freq = load_sparsity(sae_dir)
    order = np.argsort(-freq) if freq is not None else np.arange(d_sae)
    picked += [int(i) for i in order]
    return list(dict.fromkeys(picked))[: min(n, d_sae)]


def write_sae_section(
    agent: Agent,
    sae_dir: str | Path,
    dataset: Dataset,
    out_dir: str | Path,
    *,
    steps: int,
    k: int,
    diversity: float,
    color_matrix: np.ndarray | None,
    real_frames: np.ndarray,
    seed: int = 0,
    latents: int = DEFAULT_LATENTS,
    progress: bool = True,
) -> dict[str, Any]:
    """Analyse ``latents`` latents of the SAE in ``sae_dir`` over ``dataset`` and write ``out_dir/sae/``."""
    sae_dir = Path(sae_dir)
    sae = load_member(sae_dir, agent)
    ids = chosen_latents(sae_dir, sae.d_sae, latents)
    feature = latent_feature(sae, ids)
    out = Path(out_dir) / "sae"
    stem = images.file_stem(sae.layer)
    featviz = FeatvizSettings(
        objective=lambda layer: latent_objective(sae),
        transforms=tf.Transform(jitters=tf.NEURON_JITTERS),
        steps=steps,
        color_matrix=color_matrix,
        seed=seed,
    )
    summary = visualize_layers(
        agent, [sae.layer], ids, featviz, out_dir=out / "featviz", real_frames=real_frames, progress=progress
    )["layers"][sae.layer]
    result = find_examples(agent, feature, dataset, k=k, diversity=diversity, progress=progress)
    write_sheets(result, out / "examples", object_maps=dataset)
    for j, fid in enumerate(result.ids):
        images.save_png(out / "examples" / f"{stem}_{int(fid):04d}_top.png", top_strip(result, j))
    write_spatial(spatial_examples(agent, feature, dataset, progress=progress), out / "examples")
    response = object_response(agent, feature, dataset, progress=progress)
    write_object_response(response, out / "objects")
    chosen_for: dict[int, list[tuple[str, float]]] = {}
    if (sae_dir / EVAL_FILE).exists():
        for cls, v in json.loads((sae_dir / EVAL_FILE).read_text())["objects"].items():
            if v["latent_f1"] == v["latent_f1"]:
                chosen_for.setdefault(v["latent"], []).append((cls, v["latent_f1"]))
    rows = []
    for j, (latent, ranked) in enumerate(
        zip(response.ids.tolist(), response.ranked(TOP_OBJECTS), strict=True)
    ):
        v = summary["channels"].index(latent)
        rows.append(
            {
                "latent": latent,
                "png": f"sae/featviz/{stem}/channel_{latent:03d}.png",
                "value": summary["values"][v],
                "real_p999": summary["p999"][v],
                "top_png": f"sae/examples/{stem}_{latent:04d}_top.png",
                "examples_png": f"sae/examples/{stem}_{latent:04d}.png",
                "spatial_png": f"sae/examples/{stem}_{latent:04d}_spatial.png",
                "objects": [[o, z] for o, z in ranked if np.isfinite(z)],
                "f1": chosen_for.get(latent, []),
                "max_in_play": float(result.top.values[j, 0]),
            }
        )
    return {
        "sae": str(sae_dir),
        "layer": sae.layer,
        "architecture": trained_arch(sae),
        "d_sae": sae.d_sae,
        "sheet": f"sae/featviz/{stem}/sheet.png",
        "objects_png": "sae/objects/objects.png",
        "rows": rows,
    }


def section_html(s: dict[str, Any], thumb: int) -> str:
    """The SAE section of the report page."""
    e = html.escape
    parts = [
        (
            f"<h2 id='sae'>SAE latents of {e(s['layer'])} <small>({e(str(s['architecture']))}, {s['d_sae']} latents; "
            f"{len(s['rows'])} shown)</small></h2>"
        ),
        (
            f"<p><code>{e(s['sae'])}</code>. Per latent: the image that drives its encoder pre-activation up at the "
            "centre position, its top dataset examples, its spatial mosaic, the objects it responds to "
            "(position-matched z) and the held-out F1 of the object classes it is the best latent for "
            f"(<code>jaxinterp sae eval</code>). <a href='{s['sheet']}'>visualization sheet</a> · "
            f"<a href='{s['objects_png']}'>objects heatmap</a></p>"
        ),
        (
            "<table><tr><th>latent</th><th>wants to see (centre)</th><th>responds to in play (top examples)</th>"
            "<th>where (spatial mosaic)</th><th>objects (z)</th><th>best latent for (held-out F1)</th>"
            "<th class='num'>max in play</th></tr>"
        ),
    ]
    for r in s["rows"]:
        objs = objects_html(r["objects"])
        f1 = ", ".join(f"{e(c)} {v:.2f}" for c, v in r["f1"])
        parts.append(
            f"<tr><td class='num'>{r['latent']}</td>"
            f"<td><a href='{r['png']}'><img src='{r['png']}' height={thumb}></a></td>"
            f"<td><a href='{r['examples_png']}'><img src='{r['top_png']}' height={thumb // 2}></a></td>"
            f"<td><a href='{r['spatial_png']}'><img src='{r['spatial_png']}' height={thumb}></a></td>"
            f"<td>{objs}</td><td>{f1 or '-'}</td><td class='num'>{r['max_in_play']:.3g}</td></tr>"
        )
    parts.append("</table>")
    return "\n".join(parts)
