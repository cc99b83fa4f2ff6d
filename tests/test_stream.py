"""The streaming helper: every row visited once, padding masked, repeats dropped, the host fold one batch behind."""

import numpy as np
import pytest

from jaxinterp.envs.stream import batches, stream, stream_rows
from jaxinterp.errors import JaxinterpError


def _chunks(sizes, start=0):
    """Chunks of consecutive row numbers (and their doubles), as a dataset's stored chunks come."""
    out, s = [], start
    for n in sizes:
        rows = np.arange(s, s + n)
        out.append((rows, 2 * rows))
        s += n
    return out


@pytest.mark.parametrize("sizes", [[7, 13, 20], [8, 8], [3], [0, 5], []])
def test_every_row_is_visited_once_and_padding_is_masked(sizes):
    pieces = list(batches(_chunks(sizes), 8, fill=(-1, -2)))
    assert all(len(a) == 8 for p in pieces for a in p.arrays)  # one shape: one compile
    real = np.concatenate([p.arrays[0][p.valid] for p in pieces]) if pieces else np.zeros(0)
    np.testing.assert_array_equal(real, np.arange(sum(sizes)))
    for p in pieces:
        assert p.valid.tolist() == sorted(p.valid.tolist(), reverse=True)  # real rows first
        np.testing.assert_array_equal(p.arrays[1][p.valid], 2 * p.arrays[0][p.valid])
        assert (p.arrays[0][~p.valid] == -1).all() and (p.arrays[1][~p.valid] == -2).all()
    assert sum(p.covered for p in pieces) == sum(sizes)


def test_unpadded_pieces_keep_the_short_last_piece():
    pieces = list(batches(_chunks([10]), 4, pad=False))
    assert [len(p.arrays[0]) for p in pieces] == [4, 4, 2] and all(p.valid.all() for p in pieces)


def test_repeats_are_dropped_and_still_counted():
    frames = np.array([[0], [1], [0], [2], [1], [1], [3]], np.uint8)
    chunks = [(frames[:4], np.arange(4)), (frames[4:6], np.arange(4, 6)), (frames[6:], np.arange(6, 7))]
    pieces = list(batches(chunks, 2, distinct=True))
    kept = np.concatenate([p.arrays[1][p.valid] for p in pieces])
    np.testing.assert_array_equal(kept, [0, 1, 3, 6])  # the first copy of each distinct frame, in order
    # A chunk of repeats only gives an empty piece that counts them; the last piece of a chunk counts its repeats.
    assert [(int(p.valid.sum()), p.covered) for p in pieces] == [(2, 2), (1, 2), (0, 2), (1, 1)]
    bar = Counter()
    done = stream(pieces, lambda state, frames, index, valid: state + int(valid.sum()), 0, bar=bar)
    assert done.state == 4 and done.rows == sum(bar.seen) == 7


class Counter:
    def __init__(self):
        self.seen = []

    def update(self, n):
        self.seen.append(n)


def test_the_host_folds_one_batch_behind_the_step():
    events = []

    def step(state, rows, valid):
        events.append(("step", int(rows[0])))
        return int(rows[0])

    def fold(acc, out, batch):
        events.append(("fold", out))
        return [*acc, out]

    done = stream(
        batches(_chunks([6])[:1], 2), lambda s, rows, _, valid: step(s, rows, valid), fold=fold, acc=[]
    )
    assert done.acc == [0, 2, 4] and done.rows == 6
    # Each batch's fold runs after the next batch's step was dispatched (the device works while the host folds).
    assert events == [("step", 0), ("step", 2), ("fold", 0), ("step", 4), ("fold", 2), ("fold", 4)]


def test_stream_rows_joins_the_real_rows_along_an_axis():
    pieces = batches([(np.arange(10.0),)], 4)
    out = stream_rows(pieces, lambda x: (x[None, :] * [[1.0], [10.0]], -x[None, :]), axis=1)
    np.testing.assert_array_equal(out[0], np.arange(10.0)[None, :] * [[1.0], [10.0]])
    np.testing.assert_array_equal(out[1], -np.arange(10.0)[None, :])
    assert stream_rows(batches([], 4), lambda x: x) is None
    with pytest.raises(JaxinterpError, match="batch_size"):
        list(batches([(np.arange(3),)], 0))
