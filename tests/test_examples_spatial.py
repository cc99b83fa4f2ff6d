"""Spatially-aware dataset examples: the streaming per-position top-r, the reuse-limited choice and the mosaic."""

import numpy as np
import pytest
from PIL import Image
from test_examples_support import random_agent

from jaxinterp.errors import JaxinterpError
from jaxinterp.examples import features, spatial
from jaxinterp.models import receptive
from jaxinterp.report import example_sheets as sheets

LAYER = "conv_seqs.2.res_block1"  # 8 x 8 positions of 8 x 8-pixel cells


def frames_and_episodes(n: int = 24):
    frames = np.random.default_rng(1).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)
    return frames, np.arange(n) // 4  # 6 episodes of 4 frames


def test_each_position_keeps_its_best_frames_one_per_episode_and_their_cells():
    agent = random_agent()
    frames, episodes = frames_and_episodes()
    source = [
        {
            "frames": frames[s : s + 5],
            "index": np.arange(len(frames))[s : s + 5],
            "episode_ids": episodes[s : s + 5],
        }
        for s in range(0, len(frames), 5)
    ]
    result = spatial.spatial_examples(agent, LAYER, source, channels=[0, 3, 5], per_position=3, batch_size=4)
    maps = features.compute_feature_maps(agent, LAYER, frames)[..., [0, 3, 5]]  # (N, H, W, F)
    n, h, w, f = maps.shape
    assert result.values.shape == (f, h, w, 3) and result.cells.shape == (f, h, w, 3, 8, 8, 3)
    assert result.num_frames == n and list(result.ids) == [0, 3, 5]
    rf = receptive.receptive_field(agent, LAYER)
    for j in range(f):
        for y in range(h):
            for x in range(w):
                best, seen = [], set()  # the greedy one-per-episode ranking of the whole stream
                for i in np.argsort(-maps[:, y, x, j], kind="stable"):
                    if episodes[i] not in seen:
                        seen.add(episodes[i])
                        best.append(i)
                assert list(result.frames[j, y, x]) == best[:3], (j, y, x)
                np.testing.assert_allclose(result.values[j, y, x], maps[best[:3], y, x, j], rtol=1e-5)
                np.testing.assert_array_equal(result.episodes[j, y, x], episodes[best[:3]])
                y0, x0 = spatial.cell_boxes(rf, h)[y], spatial.cell_boxes(rf, w)[x]
                # IMPALA's positions are centred on pixels 0, 8, ..., 56: cells start half a cell earlier
                assert (y0, x0) == (8 * y - 4, 8 * x - 4)
                padded = np.pad(frames[best[0]], ((4, 4), (4, 4), (0, 0)))  # outside the frame: 0
                np.testing.assert_array_equal(
                    result.cells[j, y, x, 0], padded[8 * y : 8 * y + 8, 8 * x : 8 * x + 8]
                )


def test_fewer_episodes_than_slots_leave_empty_slots_and_frames_without_episodes_are_their_own():
    agent = random_agent()
    frames, _ = frames_and_episodes(6)
    one_episode = [{"frames": frames, "index": np.arange(6), "episode_ids": np.zeros(6, int)}]
    result = spatial.spatial_examples(agent, LAYER, one_episode, channels=1, per_position=2)
    assert (result.frames[..., 1] == spatial.EMPTY).all() and (result.frames[..., 0] >= 0).all()
    assert np.isneginf(result.values[..., 1]).all()
    plain = spatial.spatial_examples(agent, LAYER, frames, channels=1, per_position=2)
    assert (plain.frames >= 0).all()  # an array has no episodes: every frame is one


def synthetic(values, episodes, jump=8):
    """A one-feature result with given per-position candidate values (H, W, r) and episodes, cells = episode id."""
    h, w, r = values.shape
    cells = np.broadcast_to(np.asarray(episodes, np.uint8)[..., None, None, None], (h, w, r, jump, jump, 3))
    return spatial.SpatialExamples(
        layer="l",
        description="l",
        ids=np.array([0]),
        receptive_field=receptive.ReceptiveField(jump=jump, start=0, size=jump),
        values=np.asarray(values, np.float32)[None],
        frames=np.where(np.isfinite(values), 0, spatial.EMPTY)[None],
        episodes=np.asarray(episodes)[None],
        cells=cells[None].copy(),
        num_frames=1,
    )


def test_choose_limits_cells_per_episode_strongest_positions_first():
    # 1 x 4 positions; every position's best candidate is episode 7, the second-best episode 1..4.
    values = np.array([[[9.0, 1.0], [8.0, 1.0], [7.0, 1.0], [6.0, 1.0]]])
    episodes = np.array([[[7, 1], [7, 2], [7, 3], [7, 4]]])
    res = synthetic(values, episodes)
    np.testing.assert_array_equal(spatial.choose(res, 0, reuse=2), [[0, 0, 1, 1]])
    np.testing.assert_array_equal(spatial.choose(res, 0, reuse=4), [[0, 0, 0, 0]])
    # All candidates used up: the best is shown all the same.
    tight = synthetic(np.array([[[9.0], [8.0]]]), np.array([[[7], [7]]]))
    np.testing.assert_array_equal(spatial.choose(tight, 0, reuse=1), [[0, 0]])
    with pytest.raises(JaxinterpError, match="reuse"):
        spatial.choose(res, 0, reuse=0)
    # By default an episode may fill a sixteenth of the positions, at least one.
    assert spatial.default_reuse(res) == 1
    assert spatial.default_reuse(synthetic(np.zeros((8, 8, 1)), np.zeros((8, 8, 1), int))) == 4
    assert spatial.default_reuse(synthetic(np.zeros((16, 16, 1)), np.zeros((16, 16, 1), int))) == 16


def test_mosaic_is_opaque_at_the_strongest_cell_and_checkerboard_where_nothing_responds():
    values = np.array([[[4.0], [2.0]], [[0.0], [-np.inf]]])  # 2 x 2 positions, one candidate each
    episodes = np.array([[[200], [100]], [[50], [-1]]])
    res = synthetic(values, episodes, jump=32)
    image, shown = sheets.mosaic(res, 0)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(shown, [[4.0, 2.0], [0.0, np.nan]])
    assert (image[:32, :32] == 200).all()  # value / max = 1: the frame's pixels exactly
    checker = image[32:, :]
    assert set(np.unique(checker)) == set(sheets.CHECKER)  # nothing responds: the background shows
    half = image[:32, 32:].astype(float)  # half opacity over the checkerboard
    expected = 0.5 * 100 + 0.5 * np.where(((np.mgrid[:32, 32:64] // 4).sum(0)) % 2, *sheets.CHECKER)
    np.testing.assert_allclose(half[..., 0], expected, atol=0.51)
    # Signed values read the same: opacity runs from the weakest value shown to the strongest.
    shifted = synthetic(values - 10.0, episodes, jump=32)
    np.testing.assert_array_equal(sheets.mosaic(shifted, 0)[0], image)


def test_spatial_sheets_and_bad_inputs(tmp_path):
    agent = random_agent()
    frames, _ = frames_and_episodes(8)
    result = spatial.spatial_examples(agent, LAYER, frames, channels=[2, 4])
    paths = sheets.write_spatial(result, tmp_path)
    stem = "conv_seqs_2_res_block1"
    expected = [
        f"{stem}_0002_spatial.png",
        f"{stem}_0004_spatial.png",
        f"{stem}_spatial.png",
        f"{stem}_spatial.npz",
    ]
    assert [p.name for p in paths] == expected and all(p.exists() for p in paths)
    assert Image.open(paths[0]).size == (256, 256)
    with np.load(paths[-1]) as saved:
        np.testing.assert_array_equal(saved["frames"], result.frames)
    with pytest.raises(JaxinterpError, match="dense layer"):
        spatial.spatial_examples(agent, "hidden_fc", frames)
    with pytest.raises(JaxinterpError, match="per_position"):
        spatial.spatial_examples(agent, LAYER, frames, per_position=0)
