"""Streaming rows through a jitted step: every pass of jaxinterp over a dataset's frames is this one fold.

`batches` cuts chunks of rows (a dataset's stored chunks, an array) into pieces of at most ``batch_size`` rows,
padded to exactly that many so that one compiled program serves the whole stream; `stream` runs the step on each
piece, dispatched asynchronously, and folds the outputs on the host one piece behind, so that the host's share of
the work overlaps the device's. `stream_rows` is the common fold: the outputs of the real rows, joined.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxinterp.errors import JaxinterpError
from jaxinterp.models.agent import pad_rows

__all__ = ["Batch", "Streamed", "batches", "first_copies", "stream", "stream_rows"]


class Batch(NamedTuple):
    """One piece of a stream: ``arrays`` padded to the batch size, the mask of their real rows (``valid``: they come
    first), and how many source rows the piece accounts for (``covered``: its real rows and the repeats dropped
    before it)."""

    arrays: tuple[np.ndarray, ...]
    valid: np.ndarray
    covered: int


class Streamed(NamedTuple):
    """What `stream` ends with: the step's last output, the host's fold, and the source rows covered."""

    state: Any
    acc: Any
    rows: int


def first_copies(rows: np.ndarray, seen: set[bytes]) -> np.ndarray:
    """Mask of the rows whose exact bytes have not been seen before (``seen`` is updated)."""
    keep = np.zeros(len(rows), bool)
    for i, row in enumerate(rows):
        digest = hashlib.blake2b(row.tobytes(), digest_size=16).digest()
        if digest not in seen:
            seen.add(digest)
            keep[i] = True
    return keep


def batches(
    chunks: Iterable[Sequence[np.ndarray]],
    batch_size: int,
    *,
    fill: Any | tuple = 0,
    pad: bool = True,
    distinct: bool = False,
) -> Iterator[Batch]:
    """Each chunk (arrays of equal leading axes) in pieces of at most ``batch_size`` rows, padded with ``fill`` (one
    value, or a tuple of one per array) to ``batch_size`` rows.

    ``pad=False`` leaves a chunk's short last piece as it is: one more compilation, but every row's result exactly
    what a call on that piece alone gives (XLA:CPU's rounding depends on the batch shape). With ``distinct`` a row
    whose first array's bytes equal an earlier row's is dropped (a frame seen before gives the same activations);
    the last piece of each chunk counts the rows dropped from it, and a chunk of repeats only gives an empty piece.
    """
    if batch_size < 1:
        raise JaxinterpError(f"batch_size (={batch_size}) must be >= 1")
    seen: set[bytes] = set()
    for chunk in chunks:
        arrays = tuple(np.asarray(a) for a in chunk)
        n = len(arrays[0])
        if distinct:
            keep = first_copies(arrays[0], seen)
            arrays = tuple(a[keep] for a in arrays)
        fills = fill if isinstance(fill, tuple) else (fill,) * len(arrays)
        starts = range(0, len(arrays[0]), batch_size) or [0]
        for s in starts:
            piece = tuple(a[s : s + batch_size] for a in arrays)
            covered = len(piece[0]) + (n - len(arrays[0]) if s == starts[-1] else 0)
            if not pad:
                yield Batch(piece, np.ones(len(piece[0]), bool), covered)
                continue
            padded = tuple(pad_rows(batch_size, (a,), f)[0][0] for a, f in zip(piece, fills, strict=True))
            yield Batch(padded, np.arange(batch_size) < len(piece[0]), covered)


def stream(
    pieces: Iterable[Batch],
    step: Callable[..., Any],
    state: Any = None,
    *,
    fold: Callable[[Any, Any, Batch], Any] | None = None,
    acc: Any = None,
    bar=None,
) -> Streamed:
    """``state = step(state, *batch.arrays, batch.valid)`` over ``pieces``, then on the host
    ``acc = fold(acc, state, batch)`` for each piece, one piece behind: the device computes a piece while the host
    folds the one before. ``bar`` (a tqdm bar, or anything with ``update(n)``) counts the source rows covered.

    A step that does not carry a state ignores its first argument; a piece without a real row (only repeats) is
    counted and skipped.
    """
    pending, rows = None, 0
    for batch in pieces:
        rows += batch.covered
        if bar is not None:
            bar.update(batch.covered)
        if not batch.valid.any():
            continue
        state = step(state, *batch.arrays, batch.valid)  # dispatched asynchronously
        if fold is not None and pending is not None:
            acc = fold(acc, *pending)  # overlaps the device step just dispatched
        pending = (state, batch)
    if fold is not None and pending is not None:
        acc = fold(acc, *pending)
    return Streamed(state, acc, rows)


def stream_rows(pieces: Iterable[Batch], step: Callable[..., Any], *, axis: int = 0, bar=None) -> Any:
    """``step(*batch.arrays)`` (a pytree of arrays with one entry per row along ``axis``) for the real rows of every
    piece, joined as numpy; None when there were no rows."""

    def keep(parts: list, out, batch: Batch) -> list:
        def real(y):
            y = np.asarray(y)
            return y if batch.valid.all() else np.compress(batch.valid, y, axis)

        return [*parts, jax.tree.map(real, out)]

    parts = stream(pieces, lambda _, *arrays: step(*arrays[:-1]), fold=keep, acc=[], bar=bar).acc
    return jax.tree.map(lambda *ys: np.concatenate(ys, axis), *parts) if parts else None
