"""Which game objects each feature responds to, measured: a feature's value where each object class lies, against
its usual value at that same position.

A rollout dataset stores, with every frame, the game object under each pixel (`jaxinterp.envs.ground_truth`). Each
position of a feature map covers a block of the 64x64 frame (2x2 pixels at 32x32, 8x8 at 8x8), whose object
coverage weights the feature's value there. The score is position-matched: at each position, how many standard
deviations above its mean *at that position* (over all frames) the feature is, averaged over the class's pixels.
Comparing at the same position keeps a feature that fires at a fixed place (the border, the key ring at the top
right) from being credited to whatever object always sits there. All features of a layer are reduced in one
jitted pass per batch, streaming over the dataset.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.atomic import write_npz
from jaxinterp.envs.ground_truth import OBJECT_CLASSES
from jaxinterp.envs.stream import batches, stream
from jaxinterp.errors import JaxinterpError
from jaxinterp.examples.features import (
    Feature,
    as_feature,
    feature_ids,
    feature_maps,
    feature_size,
    with_params,
)
from jaxinterp.models.agent import OBS_SHAPE, Agent, preprocess
from jaxinterp.progress import bar as progress_bar

__all__ = ["ObjectResponse", "load_npz", "object_response", "objects_at", "save_npz"]

NPZ_FORMAT = "jaxinterp.objects/1"
DEFAULT_BATCH_SIZE = 64


class ObjectResponse(NamedTuple):
    """Responses of F features to K object classes over ``num_frames`` frames (numpy arrays)."""

    layer: str
    description: str
    ids: np.ndarray  # (F,) feature names (channel numbers for channels)
    classes: tuple[str, ...]  # (K,)
    # (F, K) position-matched z-score over the class's pixels (NaN where the class never appeared)
    z: np.ndarray
    mean: np.ndarray  # (F, K) plain mean feature value over the class's pixels
    pixels: np.ndarray  # (K,) how many frame pixels the class covered
    num_frames: int

    def best(self, exclude: Sequence[str] = ("floor", "wall")) -> list[tuple[int, str, float]]:
        """Per feature: (id, the object class it responds to most, that z-score), ignoring ``exclude``.

        Floor and wall cover most of every frame, so their scores stay near 0 by construction; the question is
        usually which small object a feature singles out.
        """
        keep = self._kept(exclude)
        if not keep:
            raise JaxinterpError(
                f"no object class outside {list(exclude)} appears in these {self.num_frames} frames"
            )
        z = self.z[:, keep]
        top = np.argmax(z, axis=1)
        return [
            (int(i), self.classes[keep[t]], float(z[f, t])) for f, (i, t) in enumerate(zip(self.ids, top))
        ]

    def ranked(
        self, top: int = 3, exclude: Sequence[str] = ("floor", "wall")
    ) -> list[list[tuple[str, float]]]:
        """Per feature: its ``top`` object classes outside ``exclude`` (that appeared), as (class, z-score), the
        highest first; NaN scores last."""
        keep = self._kept(exclude)
        out = []
        for z in self.z[:, keep]:
            order = np.argsort(-np.nan_to_num(z, nan=-np.inf))[:top]
            out.append([(self.classes[keep[o]], float(z[o])) for o in order])
        return out

    def _kept(self, exclude: Sequence[str]) -> list[int]:
        """Indices of the classes outside ``exclude`` that covered any pixel."""
        return [i for i, c in enumerate(self.classes) if c not in exclude and self.pixels[i] > 0]


def _block_coverage(objects: jax.Array, h: int, w: int) -> jax.Array:
    """(N, h, w, K): the fraction of each feature-map position's pixel block that each object class covers."""
    n, height, width = objects.shape
    if height % h or width % w:
        raise JaxinterpError(
            f"a {h}x{w} feature map does not tile the {height}x{width} frame into equal blocks"
        )
    onehot = jax.nn.one_hot(objects, len(OBJECT_CLASSES), dtype=jnp.float32)
    return onehot.reshape(n, h, height // h, w, width // w, -1).mean((2, 4))


class _Sums(NamedTuple):
    """Per feature-map position, summed over frames: what the position-matched score needs."""

    by_class: np.ndarray  # (h, w, F, K) feature value x class coverage
    coverage: np.ndarray  # (h, w, K)
    total: np.ndarray  # (h, w, F)
    squares: np.ndarray  # (h, w, F)


@functools.partial(jax.jit, static_argnames=("feature", "h", "w"))
def _batch_sums(agent: Agent, frames, objects, valid, *, feature: Feature, h: int, w: int) -> _Sums:
    maps = feature_maps(agent, agent.params, feature, preprocess(frames))[0] * valid[:, None, None, None]
    cov = _block_coverage(objects, h, w) * valid[:, None, None, None]
    return _Sums(jnp.einsum("nhwf,nhwk->hwfk", maps, cov), cov.sum(0), maps.sum(0), (maps * maps).sum(0))


def _scores(sums: _Sums, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(position-matched z, plain mean), both (F, K), from the summed statistics (float64)."""
    by_class, coverage, total, squares = sums
    mean = total / frames  # (h, w, F)
    std = np.sqrt(np.maximum(squares / frames - mean**2, 0.0))
    # A position where the feature never varies contributes no deviation (its value there is always the usual one).
    varies = std > 1e-6 * (np.abs(mean) + 1)
    inv = np.where(varies, 1 / np.where(varies, std, 1), 0.0)
    deviation = np.einsum("hwfk,hwf->fk", by_class, inv) - np.einsum("hwf,hwk->fk", mean * inv, coverage)
    pixels = coverage.sum((0, 1))
    seen = np.where(pixels > 0, pixels, np.nan)  # a class never seen gets NaN
    return deviation / seen, by_class.sum((0, 1)) / seen


def _pieces(source) -> tuple[Iterable[tuple[np.ndarray, np.ndarray]], int]:
    """(frames, objects) chunks of a Dataset or of a (frames, objects) pair of arrays, and how many frames."""
    if hasattr(source, "iter_chunks"):
        if "objects" not in source.fields:
            raise JaxinterpError(
                f"{source.path} has no object maps; record it again with `jaxinterp rollout`"
            )
        chunks = source.iter_chunks(None, fields=["frames", "objects"])
        return ((c["frames"], c["objects"]) for c in chunks), len(source)
    if isinstance(source, tuple) and len(source) == 2:
        frames, objects = (np.asarray(a) for a in source)
        if frames.shape[:1] != objects.shape[:1] or objects.shape[1:] != OBS_SHAPE[:2]:
            raise JaxinterpError(
                f"frames {frames.shape} and object maps {objects.shape} must be (N, 64, 64, 3) and (N, 64, 64)"
            )
        return [(frames, objects)], len(frames)
    raise JaxinterpError("source must be a rollout Dataset or a (frames, objects) pair of arrays")


def _add(sums: _Sums | None, batch: _Sums) -> _Sums:
    """``sums`` plus a batch's, in float64: a variance from float32 sums over a million frames would lose digits."""
    batch = _Sums(*(np.asarray(x, np.float64) for x in batch))
    return batch if sums is None else _Sums(*(a + b for a, b in zip(sums, batch, strict=True)))


def object_response(
    agent: Agent,
    feature: Feature | str,
    source,
    *,
    channels: Sequence[int] | int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    params=None,
    progress: bool = True,
) -> ObjectResponse:
    """Measure how every feature of ``feature`` (a layer name: its channels) responds to each Heist object class
    over ``source`` (a dataset with object maps, or a ``(frames, objects)`` pair); ``progress`` shows a bar of the
    frames. The whole pass is one compiled step per batch, for all features at once."""
    feature = as_feature(agent, feature, channels)
    h, w, _ = feature_size(agent, feature)
    chunks, total = _pieces(source)
    step = functools.partial(_batch_sums, with_params(agent, params), feature=feature, h=h, w=w)
    with progress_bar(total, desc=f"objects {feature.layer}", unit="frame", enabled=progress) as bar:
        # The host adds a batch's sums while the device computes the next batch's.
        pieces = batches(chunks, batch_size)
        done = stream(pieces, lambda _, *batch: step(*batch), fold=lambda s, out, _: _add(s, out), bar=bar)
    if done.rows == 0:
        raise JaxinterpError("no frames to measure object responses on")
    sums = done.acc
    z, mean = _scores(sums, done.rows)
    block = (OBS_SHAPE[0] // h) * (OBS_SHAPE[1] // w)  # frame pixels per feature-map position
    return ObjectResponse(
        layer=feature.layer,
        description=feature.description,
        ids=feature_ids(agent, feature),
        classes=OBJECT_CLASSES,
        z=z,
        mean=mean,
        pixels=(sums.coverage.sum((0, 1)) * block).round().astype(np.int64),
        num_frames=done.rows,
    )


def objects_at(object_maps, frames, ys, xs, block: int) -> np.ndarray:
    """The object class (index into `OBJECT_CLASSES`) under feature-map positions ``(ys, xs)`` of ``frames``.

    ``object_maps``: a rollout ``Dataset`` (only the maps of these frames are read), or a mapping from global frame
    index to its (64, 64) map (a dict, or an array indexed by it). A position covers a ``block`` x ``block`` pixel
    square (the layer's stride, ``ReceptiveField.jump``) and names the object covering most of it, floor and wall
    counting only when no object is there; an empty slot (negative frame index) gives -1.
    """
    frames, ys, xs = (np.asarray(a) for a in (frames, ys, xs))
    if hasattr(object_maps, "iter_chunks"):  # a Dataset: read just the frames asked for
        shown = np.unique(frames[frames >= 0])
        object_maps = dict(zip(shown.tolist(), object_maps.get(shown, ["objects"])["objects"], strict=True))
    bh = bw = int(block)
    background = [OBJECT_CLASSES.index("floor"), OBJECT_CLASSES.index("wall")]
    out = np.full(frames.shape, -1, np.int64)
    for i in zip(*np.nonzero(frames >= 0)):
        y, x = int(ys[i]), int(xs[i])
        block_map = np.asarray(object_maps[int(frames[i])])[y * bh : (y + 1) * bh, x * bw : (x + 1) * bw]
        counts = np.bincount(block_map.ravel(), minlength=len(OBJECT_CLASSES))
        objects = counts.copy()
        objects[background] = 0
        out[i] = np.argmax(objects) if objects.any() else np.argmax(counts)
    return out


def save_npz(result: ObjectResponse, path: str | Path) -> None:
    """Write ``result`` as an ``.npz`` (plain arrays; ``load_npz`` reads it back)."""
    write_npz(
        path,
        format=NPZ_FORMAT,
        layer=result.layer,
        description=result.description,
        ids=result.ids,
        classes=np.asarray(result.classes),
        mean=result.mean,
        z=result.z,
        pixels=result.pixels,
        num_frames=result.num_frames,
    )


def load_npz(path: str | Path) -> ObjectResponse:
    """Read a ``save_npz`` file."""
    with np.load(path, allow_pickle=False) as f:
        if "format" not in f or str(f["format"]) != NPZ_FORMAT:
            raise JaxinterpError(f"{path} is not a jaxinterp object-response file ({NPZ_FORMAT})")
        return ObjectResponse(
            layer=str(f["layer"]),
            description=str(f["description"]),
            ids=f["ids"],
            classes=tuple(str(c) for c in f["classes"]),
            z=f["z"],
            mean=f["mean"],
            pixels=f["pixels"],
            num_frames=int(f["num_frames"]),
        )
