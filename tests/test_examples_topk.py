"""Streaming top-k, diversity selection, receptive-field crops, find_examples and sheets (tiny agents, CPU)."""

import functools

import jax
import numpy as np
import pytest
from PIL import Image
from test_examples_support import random_agent

from jaxinterp.errors import JaxinterpError
from jaxinterp.examples import features, find, patches, source, topk
from jaxinterp.models import receptive
from jaxinterp.render import GAP
from jaxinterp.report import example_sheets as sheets

LAYER = "conv_seqs.1.res_block0"  # a residual sum: signed, so frame maxima and minima have no ties


@functools.cache
def random_frames(n: int = 40) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)


def chunks(frames, sizes, index):
    """``frames`` split into chunks of ``sizes`` with their global ``index``, as a dataset reader yields them."""
    out, s = [], 0
    for n in sizes:
        out.append({"frames": frames[s : s + n], "index": index[s : s + n]})
        s += n
    return out


def reference_sort(values, descending=True):
    """Stable sort order (earlier rows win ties), what the streaming top-k must reproduce."""
    return np.argsort(-values if descending else values, axis=0, kind="stable")


@pytest.mark.parametrize("frame_score", ["max", "mean"])
def test_streaming_topk_equals_full_sort(frame_score):
    agent, frames = random_agent(), random_frames()
    index = 1000 + 3 * np.arange(len(frames))  # global indices need not be contiguous
    k, m = 5, 12
    result = topk.scan(
        agent,
        features.channels(LAYER),
        chunks(frames, [7, 13, 20], index),
        k=k,
        num_candidates=m,
        frame_score=frame_score,
        batch_size=8,  # chunks are split and the last pieces padded
    )
    maps = features.compute_feature_maps(agent, LAYER, frames)  # (N, H, W, F)
    n, h, w, f = maps.shape
    flat = maps.reshape(n, h * w, f)
    score = flat.max(1) if frame_score == "max" else flat.mean(1)
    assert result.num_frames == n
    for ranked, desc, argpos in ((result.top, True, flat.argmax(1)), (result.bottom, False, flat.argmin(1))):
        order = reference_sort(score, desc)[:k].T  # (F, k)
        np.testing.assert_array_equal(ranked.frames, index[order])
        np.testing.assert_allclose(ranked.values, np.take_along_axis(score.T, order, 1), rtol=1e-5, atol=1e-5)
        pos = np.take_along_axis(argpos.T, order, 1)
        np.testing.assert_array_equal(ranked.ys * w + ranked.xs, pos)
    # Candidates: one per frame, ranked by the frame's maximum, carrying the layer's vector at that position.
    order = reference_sort(flat.max(1))[:m].T
    np.testing.assert_array_equal(result.candidates.frames, index[order])
    local = order  # the layer is the feature here: vectors are the maps at the candidate position
    np.testing.assert_allclose(
        result.vectors, maps[local, result.candidates.ys, result.candidates.xs], rtol=1e-5, atol=1e-5
    )
    # The host keeps exactly the frames the state refers to, as they were.
    refs = {int(i) for r in (result.top, result.bottom, result.candidates) for i in np.ravel(r.frames)}
    assert set(result.frames) == refs
    for i, frame in result.frames.items():
        np.testing.assert_array_equal(frame, frames[(i - 1000) // 3])


def test_streaming_all_positions_equals_full_sort():
    agent, frames = random_agent(), random_frames(12)
    m = 20
    result = topk.scan(
        agent,
        features.channels(LAYER, [0, 5]),
        frames,
        k=4,
        num_candidates=m,
        one_per_frame=False,
        batch_size=5,
    )
    maps = features.compute_feature_maps(agent, features.channels(LAYER, [0, 5]), frames)
    n, h, w, f = maps.shape
    order = reference_sort(maps.reshape(n * h * w, f))[:m].T  # row = frame * H W + y W + x
    np.testing.assert_array_equal(result.candidates.frames, order // (h * w))
    np.testing.assert_array_equal(result.candidates.ys * w + result.candidates.xs, order % (h * w))


@pytest.mark.parametrize("dedupe", [True, False])
def test_exact_copies_count_once(dedupe):
    agent, base = random_agent(), random_frames(10)
    copies = np.array([0, 1, 2, 2, 3, 2, 4, 5, 7, 2, 6, 7, 8, 9, 7])  # a standing agent: the same frame again
    frames = base[copies]
    result = topk.scan(
        agent, features.channels(LAYER), frames, k=4, num_candidates=8, batch_size=4, dedupe=dedupe
    )
    maps = features.compute_feature_maps(agent, LAYER, frames)
    score = maps.max((1, 2))
    # With dedupe, rank only the first occurrence of each distinct frame.
    keep = np.unique(copies, return_index=True)[1] if dedupe else np.arange(len(frames))
    for ranked, desc, n in ((result.top, True, 4), (result.candidates, True, 8), (result.bottom, False, 4)):
        np.testing.assert_array_equal(ranked.frames, keep[reference_sort(score[keep], desc)][:n].T)


def test_fewer_distinct_examples_than_k_leave_empty_slots():
    frames = np.repeat(random_frames(2), 3, axis=0)  # 2 distinct frames, 3 copies each
    result = find.find_examples(random_agent(), LAYER, frames, channels=[0, 1], k=4, diversity=1.0)
    assert result.top.frames.shape == (2, 2)  # trailing slots no feature filled are dropped
    assert (result.positions.frames >= 0).all()
    assert set(result.top.frames.ravel()) <= {0, 3}


def test_fewer_frames_than_k_keeps_what_there_is():
    result = topk.scan(random_agent(), features.channels(LAYER, [1]), random_frames(3), k=5, num_candidates=8)
    assert result.top.values.shape == (1, 3) and result.candidates.values.shape == (1, 3)
    assert sorted(result.top.frames[0]) == [0, 1, 2]


def test_diversity_weight_zero_is_topk():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((6, 20)).astype(np.float32)
    scores[:, 3] = scores[:, 7]  # ties resolve like top_k: lower index first
    sim = patches.similarity(rng.standard_normal((6, 20, 5)), "activations")
    chosen = patches.select_diverse(scores, sim, 8, weight=0.0)
    np.testing.assert_array_equal(chosen, np.asarray(jax.lax.top_k(scores, 8)[1]))


def test_diversity_penalizes_similar_candidates():
    scores = np.array([[3.0, 2.9, 2.0, 1.0]])
    vectors = np.array([[[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [-1.0, 0.0]]])
    sim = patches.similarity(vectors, "activations")
    np.testing.assert_allclose(np.diagonal(sim[0]), 1.0, rtol=1e-5)
    assert list(patches.select_diverse(scores, sim, 3, weight=0.0)[0]) == [0, 1, 2]
    # After 0: the near-copy scores 2.9 - 2·1, the orthogonal one 2.0 - 2·0, the opposite one 1.0 + 2·1 (a
    # candidate unlike every chosen one gains); then the orthogonal one beats the near-copy.
    assert list(patches.select_diverse(scores, sim, 3, weight=2.0)[0]) == [0, 3, 2]


def test_crop_pads_outside_the_frame():
    frames = np.random.default_rng(1).integers(1, 256, (2, 64, 64, 3), dtype=np.uint8)
    size, pad = 21, 7
    y0, x0 = np.array([-5, 50]), np.array([3, -10])
    got = patches.crop(frames, y0, x0, size, pad_value=pad)
    big = np.pad(frames, ((0, 0), (30, 30), (30, 30), (0, 0)), constant_values=pad)
    for i in range(2):
        np.testing.assert_array_equal(
            got[i], big[i, y0[i] + 30 : y0[i] + 30 + size, x0[i] + 30 : x0[i] + 30 + size]
        )


def dot_frames(n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Black frames with one 2×2 white dot each, at random (y, x)."""
    frames = np.zeros((n, 64, 64, 3), np.uint8)
    where = rng.integers(0, 63, (n, 2))
    for f, (y, x) in zip(frames, where, strict=True):
        f[y : y + 2, x : x + 2] = 255
    return frames, where


@pytest.mark.parametrize("layer", ["conv_seqs.0.res_block0", "conv_seqs.1.max_pool2d"])
def test_patches_contain_the_pixels_that_drove_the_activation(layer):
    # With |weights| and zero biases a position is nonzero exactly when its field holds the dot; the top
    # position's patch must then show the dot, and so must its box (a swapped y/x or an offset would miss).
    agent = random_agent(positive=True)
    frames, where = dot_frames(12, np.random.default_rng(2))
    result = find.find_examples(agent, layer, frames, k=4, batch_size=16)
    rf = receptive.receptive_field(agent, layer)
    assert result.patches.shape[2:] == (rf.size, rf.size, 3)
    assert (result.positions.values > 0).all()
    for f in range(result.patches.shape[0]):
        for j in range(4):
            i = result.positions.frames[f, j]
            y0, y1, x0, x1 = rf.box(result.positions.ys[f, j], result.positions.xs[f, j])
            dy, dx = where[i]
            assert y0 <= dy < y1 and x0 <= dx < x1
            assert result.patches[f, j, dy - y0, dx - x0].min() == 255
            assert result.patches[f, j].sum() == 255 * 3 * 4  # the dot and nothing else


def test_find_examples_plain_and_diverse_and_sheets(tmp_path):
    agent, frames = random_agent(), random_frames()
    plain = find.find_examples(agent, LAYER, frames, channels=[2, 6], k=4, batch_size=16, patch_size=24)
    assert plain.ids.tolist() == [2, 6] and plain.patches.shape == (2, 4, 24, 24, 3)
    # Without diversity the chosen positions are the top frames (one arg-max position per frame).
    np.testing.assert_array_equal(plain.positions.frames, plain.top.frames)
    assert plain.candidates.values.shape == (2, 16)
    for on in ("activations", "pixels"):
        diverse = find.find_examples(
            agent, LAYER, frames, channels=[2, 6], k=4, batch_size=16, diversity=100.0, diversity_on=on
        )
        assert set(diverse.positions.frames.ravel()) <= set(diverse.candidates.frames.ravel())
        assert (
            diverse.positions.frames[:, 0] == plain.top.frames[:, 0]
        ).all()  # the best one always goes first
        assert len({tuple(r) for r in diverse.positions.frames}) == 2
    paths = sheets.write_sheets(plain, tmp_path, columns=2)
    assert [p.name for p in paths] == [
        "conv_seqs_1_res_block0_0002.png",
        "conv_seqs_1_res_block0_0006.png",
        "conv_seqs_1_res_block0_overview.png",
        "conv_seqs_1_res_block0_examples.npz",
    ]
    with Image.open(paths[2]) as im:  # a row per channel of 2 views (24-px patches at 2x, the 48-px minimum)
        assert im.width == 2 * 48 + 3 * GAP and im.height > 2 * 48
    with Image.open(paths[0]) as im:
        assert im.width >= 2 * 96
    saved = find.load_npz(paths[-1])
    np.testing.assert_array_equal(saved["positions_frames"], plain.positions.frames)
    np.testing.assert_array_equal(saved["bottom_values"], plain.bottom.values)
    assert str(saved["layer"]) == LAYER


class FakeDataset:
    """What ``find_examples`` uses of ``jaxinterp.envs.dataset.Dataset``: stored chunks with global indices."""

    def __init__(self, frames, chunk):
        self.frames, self.chunk = frames, chunk

    def __len__(self):
        return len(self.frames)

    def iter_chunks(self, chunk_size=None, fields=None):
        assert chunk_size is None and fields == ["frames", "episode_ids"]
        for s in range(0, len(self.frames), self.chunk):
            index = np.arange(s, min(s + self.chunk, len(self)))
            yield {"frames": self.frames[s : s + self.chunk], "index": index, "episode_ids": index}


@pytest.mark.parametrize("one_per_frame", [True, False])
def test_examples_are_one_per_episode_and_position(one_per_frame):
    """Frames of one episode that peak at the same place (a lock that does not move) give one example: the best;
    each list is the head of the greedy (episode, y, x)-unique ranking of the whole stream."""
    agent, frames = random_agent(), random_frames()
    maps = features.compute_feature_maps(agent, LAYER, frames)
    n, h, w, f = maps.shape
    episodes = np.arange(n) // 10  # 4 episodes of 10 frames
    m = 12
    chunked = [
        {"frames": frames[s : s + 8], "index": np.arange(s, s + 8), "episode_ids": episodes[s : s + 8]}
        for s in range(0, n, 8)
    ]
    result = topk.scan(
        agent,
        features.channels(LAYER),
        chunked,
        k=4,
        num_candidates=m,
        one_per_frame=one_per_frame,
        batch_size=8,
    )
    flat = maps.reshape(n, h * w, f)

    def unique_head(frame, pos, values, count):
        seen, head = set(), []
        for i in np.argsort(-values, kind="stable"):
            if (episodes[frame[i]], pos[i]) not in seen:
                seen.add((episodes[frame[i]], pos[i]))
                head.append((frame[i], pos[i]))
        return head[:count]

    def listed(ranked, j):
        return list(zip(ranked.frames[j], ranked.ys[j] * w + ranked.xs[j]))

    frame = np.arange(n)
    for j in range(f):
        top_pos, low_pos = flat[:, :, j].argmax(1), flat[:, :, j].argmin(1)
        assert listed(result.top, j) == unique_head(frame, top_pos, flat[frame, top_pos, j], 4), j
        # bottom frames rank by the lowest frame score (max), shown at their minimum
        assert listed(result.bottom, j) == unique_head(frame, low_pos, -flat[:, :, j].max(1), 4), j
        if one_per_frame:
            cand_frame, cand_pos = frame, top_pos
        else:
            cand_frame, cand_pos = np.divmod(np.arange(n * h * w), h * w)
        expected = unique_head(cand_frame, cand_pos, flat[cand_frame, cand_pos, j], m)
        assert listed(result.candidates, j) == expected, j
    plain = topk.scan(agent, features.channels(LAYER), frames, k=4, num_candidates=m, batch_size=8)
    # the episodes made a difference
    assert not np.array_equal(plain.candidates.frames, result.candidates.frames)


def test_dataset_source_equals_array_source():
    frames = random_frames(20)
    a = find.find_examples(random_agent(), LAYER, FakeDataset(frames, 7), k=3, batch_size=4)
    b = find.find_examples(random_agent(), LAYER, frames, k=3, batch_size=8)
    for x, y in zip((a.top, a.bottom, a.positions), (b.top, b.bottom, b.positions), strict=True):
        np.testing.assert_array_equal(x.frames, y.frames)
        np.testing.assert_array_equal(x.ys, y.ys)
    np.testing.assert_array_equal(a.patches, b.patches)


class Counter:
    """What the streaming internals use of a caller's tqdm bar."""

    def __init__(self):
        self.seen = []

    def update(self, n):
        self.seen.append(n)


def test_progress_and_iterables_of_arrays():
    frames = random_frames(10)
    bar = Counter()
    result = topk.scan(
        random_agent(),
        features.channels(LAYER),
        iter([frames[:6], frames[6:]]),
        k=2,
        num_candidates=4,
        bar=bar,
    )
    assert sum(bar.seen) == 10 and result.num_frames == 10
    assert result.top.frames.max() <= 9
    quiet = find.find_examples(random_agent(), LAYER, iter([frames[:6], frames[6:]]), k=2, progress=False)
    np.testing.assert_array_equal(quiet.top.frames, result.top.frames[:, :2])


def test_bad_inputs_say_what_to_do():
    agent = random_agent()
    with pytest.raises(JaxinterpError, match="uint8"):
        find.find_examples(agent, LAYER, random_frames(4).astype(np.float32))
    with pytest.raises(JaxinterpError, match="unknown layer"):
        find.find_examples(agent, "conv_seqs.9", random_frames(4))
    with pytest.raises(JaxinterpError, match="out of range"):
        find.find_examples(agent, LAYER, random_frames(4), channels=[8])
    with pytest.raises(JaxinterpError, match="diversity_on"):
        find.find_examples(agent, LAYER, random_frames(4), diversity_on="colour")


def test_repeated_frames_are_skipped_before_the_network():
    agent, frames = random_agent(), random_frames(20)
    args = {"k": 4, "num_candidates": 6, "batch_size": 8}
    unique = topk.scan(agent, features.channels(LAYER), frames, **args)
    best = int(unique.top.frames[0, 0])
    # Repeats (an agent against a wall): the best frame of channel 0 twice among new frames, then only repeats.
    stream = np.concatenate([frames, frames[[best, best, 11, 0, 5]]])
    sizes, index = [12, 10, 3], np.arange(len(stream))
    counted = Counter()
    seen = topk.scan(agent, features.channels(LAYER), chunks(stream, sizes, index), bar=counted, **args)
    assert seen.num_frames == len(stream) and sum(counted.seen) == len(stream)
    for a, b in zip(seen[:3], unique[:3], strict=True):
        jax.tree.map(np.testing.assert_array_equal, a, b)
    # Without dedupe the copies go through the network and take the next slots.
    plain = topk.scan(agent, features.channels(LAYER), chunks(stream, sizes, index), dedupe=False, **args)
    np.testing.assert_array_equal(plain.top.frames[0, :3], [best, 20, 21])


def test_chunk_tuples_read_as_frames_index_and_episodes():
    frames = random_frames(6)
    index, episodes = np.arange(10, 16), np.array([0, 0, 0, 1, 1, 1])
    as_dict = list(source.frame_batches([{"frames": frames, "index": index, "episode_ids": episodes}], 4))
    as_tuple = list(source.frame_batches([(frames, index, episodes)], 4))
    for a, b in zip(as_dict, as_tuple, strict=True):
        for x, y in zip(a.arrays, b.arrays, strict=True):
            np.testing.assert_array_equal(x, y)
    # Padding rows carry frame and episode EMPTY.
    np.testing.assert_array_equal(as_dict[1].arrays[1], [14, 15, source.EMPTY, source.EMPTY])
    # No index: counts from 0; each frame its own episode.
    ((_, idx, eps), valid, covered) = next(source.frame_batches([(frames,)], 8))
    np.testing.assert_array_equal(idx[valid], np.arange(6))
    np.testing.assert_array_equal(eps, idx)
    assert covered == 6
    with pytest.raises(JaxinterpError, match="frames\\[, index\\[, episode_ids\\]\\]"):
        list(source.frame_batches([(frames, index, episodes, index)], 4))


def test_sheets_of_wide_fields_box_the_position_and_frame_wide_ones_show_whole_frames():
    """IMPALA's last stage sees 141 px: its patch would be the frame, small, in a black border."""
    agent = random_agent()
    deep = receptive.receptive_field(agent, "conv_seqs.2.res_block1")
    assert sheets.covers_frame(deep) and not sheets.covers_frame(receptive.receptive_field(agent, LAYER))
    assert not sheets.covers_frame(receptive.WHOLE_FRAME)
    frame = random_frames()[0] // 2  # no pixel can be the box colour
    ranked = topk.Ranked(*(np.array([[a, b]]) for a, b in ((1.0, 0.0), (3, -1), (2, 0), (5, 0))))
    result = find.find_examples(agent, "conv_seqs.2.res_block1", random_frames(8), channels=[1], k=2)
    views = sheets.example_views(result._replace(frames={3: frame}), ranked, result.patches, 0, scale=2)
    assert views.shape == (2, 128, 128, 3) and (views[1] == 0).all()  # an empty slot is black, unboxed
    boxed = (views[0] == sheets.BOX_COLOR).all(-1)
    # Position (2, 5) of the stride-8 map: field centre at pixel (16.5, 40.5), cell rows 12-19, columns 36-43.
    rows, cols = np.nonzero(boxed)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (24, 39, 72, 87) and boxed.sum() == 4 * 16 - 4
    np.testing.assert_array_equal(views[0][~boxed], np.repeat(np.repeat(frame, 2, 0), 2, 1)[~boxed])
    assert sheets.examples_sheet(result, 0, columns=2).shape[1] == 2 * (128 + GAP) + GAP  # not 141-px patches
    # The second stage's 61-px patches are kept, with the cell (4 px around the centre, 30.5) boxed: rows 28-31.
    mid = find.find_examples(agent, "conv_seqs.1.res_block1", random_frames(8), channels=[1], k=2)
    patches = random_frames(2)[None, :, :61, :61] // 2
    rows, cols = np.nonzero(
        (sheets.example_views(mid, ranked, patches, 0, scale=1)[0] == sheets.BOX_COLOR).all(-1)
    )
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (28, 31, 28, 31)
