"""The one-line entry points: each gives what the library function underneath gives, and .save writes the files
the CLI writes."""

import numpy as np
import pytest

import jaxinterp
from jaxinterp.examples.find import find_examples

LAYER = "conv_seqs.1.res_block1"


@pytest.fixture(scope="module")
def agent():
    return jaxinterp.Agent.random("impala", seed=5)


def test_dataset_examples_is_find_examples_with_its_sheets(agent, heist_frames, tmp_path):
    ex = jaxinterp.dataset_examples(agent, LAYER, dataset=heist_frames, channels="0-2", k=3, progress=False)
    direct = find_examples(agent, LAYER, heist_frames, channels=[0, 1, 2], k=3, progress=False)
    np.testing.assert_array_equal(ex.result.top.values, direct.top.values)
    names = {p.name for p in ex.save(tmp_path)}
    assert {"conv_seqs_1_res_block1_0000.png", "conv_seqs_1_res_block1_overview.png"} <= names
    assert ex._repr_png_().startswith(b"\x89PNG")


def test_attribute_is_the_attribution_with_its_overlay(agent, heist_frames, tmp_path):
    from jaxinterp.examples.attribution import gradient_x_activation

    frames = heist_frames[:3]
    att = jaxinterp.attribute(agent, frames, target=2, layer=LAYER, method="gxa")
    np.testing.assert_allclose(att.values, gradient_x_activation(agent, frames, 2, layer=LAYER), rtol=1e-6)
    png = att.save(tmp_path)
    assert png.exists() and (tmp_path / f"{png.stem}.npz").exists()
    with pytest.raises(jaxinterp.JaxinterpError, match="not one of ig, gxa"):
        jaxinterp.attribute(agent, frames, method="shap")


@pytest.mark.slow
def test_intervene_plays_and_saves(agent, tmp_path):
    result = jaxinterp.intervene(agent, f"{LAYER}:3=0", levels=2, max_steps=8, progress=False)
    assert [r["edit"] for r in result.rows] == ["clean", f"{LAYER}:3=0"]
    assert "| `clean` |" in result.table()
    assert (result.save(tmp_path) / "results.json").exists()


def test_visualize_gives_the_cli_job_s_images_and_files(agent, tmp_path, monkeypatch):
    from jaxinterp.report.visualizations import FeatvizSettings, visualize_layers

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the fitted colour statistics land here

    vis = jaxinterp.visualize(agent, LAYER, channels="2,5", steps=4, progress=False)
    assert vis.images.shape == (2, 1, 64, 64, 3) and vis.values.shape == (2, 1)
    settings = FeatvizSettings(steps=4, color_matrix=jaxinterp.api.color_stats(agent).matrix)
    visualize_layers(agent, [LAYER], "2,5", settings, out_dir=tmp_path / "cli", progress=False)
    job = np.load(tmp_path / "cli" / "conv_seqs_1_res_block1" / "images.npz")
    np.testing.assert_array_equal(vis.images, job["images"][-1])
    saved = vis.save(tmp_path / "api")
    assert {p.name for p in saved.iterdir()} == {
        "channel_002.png",
        "channel_005.png",
        "sheet.png",
        "images.npz",
    }
    assert vis.image(5).dtype == np.uint8
    with pytest.raises(jaxinterp.JaxinterpError, match="was not visualized"):
        vis.image(3)
