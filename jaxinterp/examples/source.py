"""What the example finders stream: an array of frames, a rollout ``Dataset`` or an iterable of chunks, read as
padded batches of (frames, global frame index, episode id)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

from jaxinterp.envs.stream import Batch, batches
from jaxinterp.errors import JaxinterpError
from jaxinterp.models.agent import OBS_SHAPE

__all__ = ["EMPTY", "Source", "frame_batches", "source_size"]

Source = Any  # uint8 array (N, 64, 64, 3) | object with iter_chunks | iterable of chunks (see frame_batches)

EMPTY = -1
"""Frame index of a slot no frame has filled yet (fewer frames seen than slots), and of a batch's padding rows."""

_MAX_INDEX = np.iinfo(np.int32).max  # frame indices travel as int32 on the device


def source_size(source: Source) -> int | None:
    """Frames in ``source``: known for an array or a Dataset, not for an iterable of chunks."""
    return (
        len(source) if hasattr(source, "iter_chunks") or isinstance(source, np.ndarray | jax.Array) else None
    )


def _check_frames(frames) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != OBS_SHAPE:
        raise JaxinterpError(
            f"frame chunks must be uint8 (N, 64, 64, 3) as procgen returns them, got {frames.dtype} {frames.shape}"
        )
    return frames


def _chunk(chunk) -> tuple:
    """(frames, index or None, episode ids or None) of one chunk of an iterable source."""
    if isinstance(chunk, dict):
        if "frames" not in chunk:
            raise JaxinterpError(
                f"a chunk dict needs a 'frames' entry (and 'index', 'episode_ids'), got {sorted(chunk)}"
            )
        return chunk["frames"], chunk.get("index"), chunk.get("episode_ids")
    if isinstance(chunk, tuple):
        if not 1 <= len(chunk) <= 3:
            raise JaxinterpError(
                f"a chunk tuple is (frames[, index[, episode_ids]]), got {len(chunk)} entries"
            )
        return (*chunk, None, None)[:3]
    return chunk, None, None


def _raw_chunks(source: Source) -> Iterator[tuple]:
    """(frames, global indices or None, episode ids or None) per chunk, whatever form the source takes."""
    if hasattr(source, "iter_chunks"):  # a jaxinterp Dataset: stored chunks, frames and their episodes
        for chunk in source.iter_chunks(None, fields=["frames", "episode_ids"]):
            yield chunk["frames"], chunk["index"], chunk["episode_ids"]
    elif isinstance(source, np.ndarray | jax.Array):
        yield np.asarray(source), None, None
    else:
        yield from map(_chunk, source)


def _chunks(source: Source) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(uint8 frames, int32 global indices, int32 episode ids) per chunk, checked; chunks without indices count
    on, and a frame without an episode id is its own episode (its index)."""
    next_index = 0
    for frames, index, episodes in _raw_chunks(source):
        frames = _check_frames(frames)
        n = len(frames)
        index = np.arange(next_index, next_index + n) if index is None else np.asarray(index, np.int64)
        episodes = index if episodes is None else np.asarray(episodes, np.int64)
        if index.shape != (n,) or episodes.shape != (n,):
            raise JaxinterpError(
                f"a chunk of {n} frames came with {index.shape} indices and {episodes.shape} episode ids; "
                "give one of each per frame"
            )
        for name, values in (("frame indices", index), ("episode ids", episodes)):
            if n and (values.min() < 0 or values.max() > _MAX_INDEX):
                raise JaxinterpError(
                    f"{name} must lie in [0, {_MAX_INDEX}], got {values.min()}..{values.max()}"
                )
        next_index = int(index.max()) + 1 if n else next_index
        yield frames, index.astype(np.int32), episodes.astype(np.int32)


def frame_batches(source: Source, batch_size: int, *, skip_repeats: bool = False) -> Iterator[Batch]:
    """``source`` as `jaxinterp.envs.stream.Batch` es of (uint8 frames, int32 global indices, int32 episode ids),
    padded to ``batch_size`` rows (indices and episodes with ``EMPTY``).

    With ``skip_repeats`` a frame identical to an earlier one is left out (its activations would be identical too);
    the batch it was left out of still counts it (``covered``).
    """
    return batches(_chunks(source), batch_size, fill=(0, EMPTY, EMPTY), distinct=skip_repeats)
