"""Tests for the PNG helpers and the feature-visualization job that writes them (outputs, resume, quality)."""

import dataclasses
import json

import multihost_worker as worker
import numpy as np
import pytest
from PIL import Image

from jaxinterp import render as ri
from jaxinterp.errors import JaxinterpError
from jaxinterp.featviz import objectives as obj
from jaxinterp.featviz import transforms as tf
from jaxinterp.featviz.context import ContextSpec
from jaxinterp.featviz.real_values import PERCENTILES, real_frame_values
from jaxinterp.models.agent import parse_channels
from jaxinterp.report import visualizations as run
from jaxinterp.report.visualizations import FeatvizSettings

LAYER = "conv_seqs.0.conv"
# One channel per chunk (max_images = facets), 4 steps, fast compiles: the job's logic, not image quality.
JOB = FeatvizSettings(
    steps=4, thresholds=(2,), facets=2, max_images=2, tv=0.01, compiler_options=worker.FAST_COMPILE
)


def _run(agent, channels, out, settings=JOB, **kw):
    return run.visualize_layers(agent, [LAYER], channels, settings, out_dir=out, progress=False, **kw)


def test_to_uint8_upscale_and_strips():
    x = np.asarray([[[[-0.5, 0.0, 0.5]], [[1.0, 2.0, np.nan]]]])  # (1, 2, 1, 3)
    np.testing.assert_array_equal(ri.to_uint8(x)[0, :, 0], [[0, 0, 128], [255, 255, 0]])
    u = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    assert ri.to_uint8(u) is u
    big = ri.upscale(u, 3)
    assert big.shape == (6, 6, 3) and (big[:3, :3] == u[0, 0]).all() and (big[3:, 3:] == u[1, 1]).all()
    strip = ri.side_by_side(np.stack([u, u, u]), gap=1, scale=2)
    assert strip.shape == (4, 3 * 4 + 2, 3) and (strip[:, 4] == ri.BACKGROUND).all()
    with pytest.raises(JaxinterpError, match="scale"):
        ri.upscale(u, 0)


def test_contact_sheet_and_png(tmp_path):
    ims = np.random.default_rng(0).random((10, 8, 8, 3))
    sheet = ri.contact_sheet(ims, [str(i) for i in range(10)], columns=4, scale=2, title="t")
    assert sheet.dtype == np.uint8 and sheet.ndim == 3
    assert sheet.shape[1] == 4 * (16 + ri.GAP) + ri.GAP  # 4 columns of 16 px
    plain = ri.contact_sheet(ims, columns=4, scale=2)
    assert plain.shape[0] == 3 * (16 + ri.GAP) + ri.GAP  # 3 rows, no labels or title
    with pytest.raises(JaxinterpError, match="2 labels for 10 images"):
        ri.contact_sheet(ims, ["a", "b"])
    path = ri.write_contact_sheet(tmp_path / "a" / "sheet.png", ims, columns=5)
    assert np.asarray(Image.open(path)).shape[1] == 5 * (8 + ri.GAP) + ri.GAP
    ri.save_png(tmp_path / "one.png", ims[0])
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "one.png")), ri.to_uint8(ims[0]))


@pytest.mark.parametrize(
    "spec, want",
    [
        ("all", [0, 1, 2, 3, 4, 5]),
        ("3", [3]),
        ("0-2", [0, 1, 2]),
        ("1,4,0", [1, 4, 0]),
        ("0-1, 5", [0, 1, 5]),
        (None, list(range(6))),
        (2, [2]),
        ([5, 1, 5], [5, 1]),
    ],
)
def test_parse_channels(spec, want):
    assert parse_channels(spec, 6) == want


@pytest.mark.parametrize(
    "spec, message",
    [
        ("6", "channel 6 is out of range for the layer: it has channels 0-5"),
        ("3-1", "runs backwards"),
        ("a", "not a number or a range"),
        ("1,,2", "not a number"),
        ([], "no channels"),
    ],
)
def test_parse_channels_errors(spec, message):
    with pytest.raises(JaxinterpError, match=message) as err:
        parse_channels(spec, 6)
    assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def agent():
    return worker.tiny_agent()


def test_visualize_layers_writes_resumes_and_measures(agent, heist_frames, tmp_path, monkeypatch):
    out = tmp_path / "viz"
    first = _run(agent, "0-1", out, real_frames=heist_frames)
    s = first["layers"][LAYER]
    folder = out / ri.file_stem(LAYER)
    assert s["computed"] == 2 and not s["skipped"] and s["channels"] == [0, 1]
    for name in ("channel_000.png", "channel_001.png", "sheet.png", "images.npz", "settings.json"):
        assert (folder / name).exists(), name
    png = np.asarray(Image.open(folder / "channel_001.png"))
    assert png.shape == (64 * 4, 2 * 64 * 4 + ri.GAP, 3)  # two facets side by side, 4x
    with np.load(folder / "images.npz") as z:
        images, values, p = z["images"], z["values"], z["percentiles"]
        assert images.shape == (2, 2, 2, 64, 64, 3) and values.shape == (2, 2, 2)
        assert z["thresholds"].tolist() == [2, 4] and np.isfinite(images).all()
    settings = json.loads((folder / "settings.json").read_text())
    assert settings["objective"] == f"channel({LAYER!r}, i) - 0.01 * total_variation()"
    assert settings["measure"] == f"channel({LAYER!r}, i)"
    # The quality measure: real-frame percentiles of the (penalty-free) objective, and the fraction beaten.
    real = real_frame_values(agent, obj.channel(LAYER), [0, 1], heist_frames)
    np.testing.assert_allclose(p, np.percentile(real, PERCENTILES, axis=1), rtol=1e-5)
    best = values[-1].max(axis=1)
    assert s["beat_p99"] == np.mean(best > p[0]) and s["beat_p999"] == np.mean(best > p[1])
    assert s["nonpositive_p999"] == np.sum(np.percentile(real, 99.9, axis=1) <= 0)

    # Same settings: nothing to do.
    again = _run(agent, "0-1", out, real_frames=heist_frames)
    assert again["layers"][LAYER]["skipped"]
    # More channels: only the new ones are computed; the old ones keep their images.
    more = _run(agent, "all", out, real_frames=heist_frames)
    assert more["layers"][LAYER]["computed"] == 2
    with np.load(folder / "images.npz") as z:
        np.testing.assert_array_equal(z["images"][:, :2], images)
        assert z["channels"].tolist() == [0, 1, 2, 3]
    with Image.open(folder / "sheet.png") as im:
        captioned = im.height  # with real frames, captions have a second line: the channel's real p99.9

    # A crash after the chunks were written (new settings: another seed) resumes from the chunks.
    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(run, "write_layer_outputs", crash)
    with pytest.raises(RuntimeError, match="simulated"):
        _run(agent, "all", out, dataclasses.replace(JOB, seed=1))
    assert len(list((folder / "chunks").glob("chunk_*.npz"))) == 4
    monkeypatch.undo()
    resumed = _run(agent, "all", out, dataclasses.replace(JOB, seed=1))
    assert resumed["layers"][LAYER]["computed"] == 0 and not resumed["layers"][LAYER]["skipped"]
    assert resumed["layers"][LAYER]["beat_p99"] is None  # no real frames this time
    with Image.open(folder / "sheet.png") as im:
        assert im.height < captioned
    assert not list((folder / "chunks").glob("*.npz"))
    with np.load(folder / "images.npz") as z:
        assert not np.allclose(z["images"][-1, :2], images[-1])  # another seed, other images


def test_visualize_layers_errors(agent, tmp_path):
    with pytest.raises(JaxinterpError, match="unknown layer 'nope'"):
        run.visualize_layers(agent, ["nope"], settings=JOB, out_dir=tmp_path)
    with pytest.raises(JaxinterpError, match="channel 4 is out of range for layer 'conv_seqs.0.conv'"):
        _run(agent, "2-4", tmp_path)
    with pytest.raises(JaxinterpError, match="cannot parse objective"):
        _run(agent, "all", tmp_path, dataclasses.replace(JOB, objective="channel +"))
    with pytest.raises(JaxinterpError, match="pass `real_frames`"):
        _run(agent, "all", tmp_path, FeatvizSettings(objective="neuron", context=ContextSpec()))
    assert not any(tmp_path.iterdir())  # nothing written before the checks pass


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"color_matrix": np.eye(2)}, "3×3"),
        ({"basis": "wavelet"}, "'fft' or 'pixel'"),
        ({"scale": 0}, "`scale`"),
        ({"transforms": True}, "transforms.Transform or None"),
        ({"context": ContextSpec(), "transforms": tf.no_transforms()}, "leave `transforms` at its default"),
        ({"steps": 4, "thresholds": (8,)}, "thresholds"),
    ],
)
def test_settings_are_checked_when_built(settings, message):
    with pytest.raises(JaxinterpError, match=message) as err:
        FeatvizSettings(**settings)
    assert "\n" not in str(err.value)


def test_settings_keep_the_colour_matrix_exactly():
    matrix = np.random.default_rng(0).normal(size=(3, 3)).astype(np.float32)
    settings = FeatvizSettings(color_matrix=matrix)
    np.testing.assert_array_equal(settings.matrix, matrix)
    assert settings == FeatvizSettings(
        color_matrix=matrix.tolist()
    )  # comparable, whatever array-like it came as
