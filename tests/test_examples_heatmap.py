"""Feature functions (channels, directions) and heatmaps: upsampling aligned on receptive fields, overlays, PNGs."""

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from test_examples_support import random_agent

from jaxinterp import render
from jaxinterp.errors import JaxinterpError
from jaxinterp.examples import features, find
from jaxinterp.models import receptive
from jaxinterp.report import overlays as heatmaps

LAYER = "conv_seqs.1.res_block0"


def frames(n: int = 6) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)


def test_direction_with_one_hot_equals_the_channel():
    agent = random_agent()
    c = 5
    one_hot = np.eye(8, dtype=np.float32)[c]
    by_channel = features.compute_feature_maps(agent, features.channels(LAYER, [c]), frames())
    by_direction = features.compute_feature_maps(agent, features.direction(LAYER, one_hot), frames())
    np.testing.assert_allclose(by_direction, by_channel, rtol=1e-6, atol=1e-6)
    # Several directions at once: a (C, F) matrix of one-hots equals that channel selection.
    pick = [6, 1]
    many = features.compute_feature_maps(agent, features.direction(LAYER, np.eye(8)[:, pick]), frames())
    np.testing.assert_allclose(
        many, features.compute_feature_maps(agent, features.channels(LAYER, pick), frames())
    )
    # The example finder treats a direction like any feature: same examples as the channel.
    a = find.find_examples(agent, features.direction(LAYER, one_hot), frames(), k=3)
    b = find.find_examples(agent, LAYER, frames(), channels=[c], k=3)
    np.testing.assert_array_equal(a.top.frames, b.top.frames)
    np.testing.assert_array_equal(a.positions.ys, b.positions.ys)
    np.testing.assert_allclose(a.top.values, b.top.values, rtol=1e-6)


def test_custom_feature_and_dense_layers():
    agent = random_agent()
    # Any (N, H, W, C) -> (N, H, W, F) function: here the channel norm, one map.
    norm = features.Feature(LAYER, lambda a: jnp.sqrt((a * a).sum(-1, keepdims=True)), "norm")
    assert features.feature_size(agent, norm) == (16, 16, 1)
    assert (features.compute_feature_maps(agent, norm, frames(2)) >= 0).all()
    bad = features.Feature(LAYER, lambda a: a.sum(-1), "no feature axis")
    with pytest.raises(JaxinterpError, match=r"\(N, H, W, F\)"):
        features.feature_size(agent, bad)
    # Dense layers are one position covering the whole frame.
    dense = find.find_examples(agent, "hidden_fc", frames(4), channels=[0, 3], k=2)
    assert dense.patches.shape == (2, 2, 64, 64, 3)
    assert (dense.positions.ys == 0).all() and (dense.positions.xs == 0).all()


def test_upsample_places_positions_on_their_field_centres():
    agent = random_agent()
    rng = np.random.default_rng(0)
    for layer in ("conv_seqs.2.res_block1", "conv_seqs.0.max_pool2d"):
        rf = receptive.receptive_field(agent, layer)
        h = agent.layer_shapes[layer][0]
        maps = rng.standard_normal((2, h, h)).astype(np.float32)
        up = receptive.upsample(maps, rf, method="bilinear")
        assert up.shape == (2, 64, 64)
        # IMPALA's odd fields are centred on pixels (8i and 2i here, not 8i + 3.5 and 2i + 0.5 as an image resize
        # would put them); there the upsampled map equals the position's value.
        centre = rf.center(np.arange(h))
        np.testing.assert_allclose(centre % 1, 0.5)
        p = (centre - 0.5).astype(int)
        np.testing.assert_allclose(up[:, p][:, :, p], maps, rtol=1e-5, atol=1e-6)
        near = receptive.upsample(maps, rf, method="nearest")
        assert set(np.unique(near)) <= set(np.unique(maps))
    # Without a field: a plain resize, nearest is a block repeat.
    maps = rng.standard_normal((1, 8, 8, 2)).astype(np.float32)
    np.testing.assert_array_equal(receptive.upsample(maps, method="nearest"), maps.repeat(8, 1).repeat(8, 2))
    np.testing.assert_allclose(receptive.upsample(np.ones((1, 4, 4))), 1.0, rtol=1e-6)


def test_overlays_and_feature_heatmap_pngs(tmp_path):
    f = frames(3)
    heat = np.random.default_rng(1).random((3, 64, 64))
    over = render.overlay(f, heat, alpha=0.0)
    np.testing.assert_array_equal(over, f)  # alpha 0: just the frame
    colours = render.colorize(heat)
    assert colours.shape == (3, 64, 64, 3) and colours.dtype == np.uint8
    path = heatmaps.write_overlays(tmp_path / "o.png", f, heat, scale=2)
    with Image.open(path) as im:
        assert im.size == (3 * 64 * 2, 2 * 64 * 2)
    paths = heatmaps.write_feature_heatmaps(random_agent(), LAYER, f, tmp_path / "maps", channels=[1, 4])
    assert [p.name for p in paths] == ["conv_seqs_1_res_block0_0001.png", "conv_seqs_1_res_block0_0004.png"]
    with pytest.raises(JaxinterpError, match="upsample"):
        render.overlay(f, heat[:, :8, :8])


def test_weighted_overlays_leave_unattributed_pixels_clear_and_clip_at_the_percentile():
    f = frames(1)
    heat = np.zeros((1, 64, 64), np.float32)
    heat[0, :4, :] = 1.0  # 256 pixels at 1 (6% of the frame), one outlier at 100
    heat[0, 10, 10] = 100.0
    over = render.overlay(f, heat, alpha=0.9, weighted=True, percentile=90)
    np.testing.assert_array_equal(over[0, 20:], f[0, 20:])  # zero heat: the frame itself
    # The 90th percentile is 0 here (94% zeros): everything above it saturates, fully coloured at alpha 0.9.
    top = render.colorize(np.ones(1), vmin=0, vmax=1)[0].astype(np.float32)
    expected = (0.1 * f[0, :4].astype(np.float32) + 0.9 * top).round()
    np.testing.assert_allclose(over[0, :4], expected, atol=1)  # float rounding
    # Scaled to the outlier instead (percentile 100), the band is at 1% of the range: nearly clear.
    faint = render.overlay(f, heat, alpha=0.9, weighted=True)
    assert np.abs(faint[0, :4].astype(int) - f[0, :4]).max() <= 3
    # Signed: opacity grows with |heat| on both sides of zero.
    signed = render.overlay(f, -heat, alpha=0.9, weighted=True, symmetric=True, cmap=render.DIVERGING_CMAP)
    np.testing.assert_array_equal(signed[0, 20:], f[0, 20:])
    assert (signed[0, 10, 10] != f[0, 10, 10]).any()
