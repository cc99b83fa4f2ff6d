"""The activation source: one layer's activations over a rollout dataset, one sample per spatial position.

Each position of a conv layer is a sample (``d_in`` = channels) that keeps its (frame, y, x), so latents map back to
patches and maps; a dense layer is a 1x1 map. The activations live in one memory-mapped ``.npy`` (the dataset's
stored ``act_<layer>`` copied, or computed by the truncated forward in chunks), and a batch is a slice of a
seeded permutation of all training samples: a perfect shuffle (positions of one frame are highly correlated, so
they must not arrive together) in bounded memory, and a pure function of (seed, step), so a resumed run sees
exactly the batches an uninterrupted one would. Whole episodes are held out for every metric.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from jaxinterp.atomic import atomic_path, write_text
from jaxinterp.envs.dataset import Dataset
from jaxinterp.envs.stream import batches, stream
from jaxinterp.errors import JaxinterpError
from jaxinterp.models.agent import Agent
from jaxinterp.progress import bar as progress_bar

__all__ = [
    "CHUNK_FRAMES",
    "HELDOUT_EVERY",
    "ActivationSource",
    "evenly",
    "geometric_median",
    "heldout_mask",
    "input_scale",
    "layer_activations",
]

HELDOUT_EVERY = 10
"""Episodes whose id is ``HELDOUT_EVERY - 1`` modulo this are held out: a tenth of the play, whole episodes."""


def heldout_mask(episode_ids: np.ndarray) -> np.ndarray:
    """(N,) bool: the frames of held-out episodes (see `HELDOUT_EVERY`)."""
    return np.asarray(episode_ids) % HELDOUT_EVERY == HELDOUT_EVERY - 1


CHUNK_FRAMES = 256
"""Frames per forward pass when the activations are computed (bounded memory; progress per chunk)."""


def layer_activations(
    agent: Agent, dataset: Dataset, layer: str, cache: str | os.PathLike, *, progress: bool = True
) -> np.ndarray:
    """``(N, H, W, C)`` float32 activations of ``layer`` on every frame of ``dataset``, memory-mapped from
    ``cache`` (an ``.npy`` path). Reuses the file when it was made for the same agent and dataset."""
    agent.check_layers([layer])
    shape = agent.layer_shapes[layer]
    shape = shape if len(shape) == 3 else (1, 1, *shape)
    cache = Path(cache)
    stamp = {
        "agent": agent.params_digest(),
        "dataset": str(Path(dataset.path).resolve()),
        "frames": len(dataset),
    }
    stamp_path = cache.with_suffix(".json")
    if cache.exists() and stamp_path.exists() and json.loads(stamp_path.read_text()) == stamp:
        return np.load(cache, mmap_mode="r")
    if len(dataset) == 0:
        raise JaxinterpError(
            f"the dataset {dataset.path} has no frames; record some with `jaxinterp rollout`"
        )
    field = layer if layer in dataset.layers else "frames"
    chunks = ((c[field],) for c in dataset.iter_chunks(CHUNK_FRAMES, fields=[field]))

    def step(_, rows, valid):
        # A layer the dataset recorded is copied; otherwise its frames go through the truncated forward.
        return rows if field == layer else agent.activations(rows, [layer])[layer]

    # Chunks as the dataset cuts them, unpadded: each frame's activations as one call on its chunk gives them.
    pieces = batches(chunks, CHUNK_FRAMES, pad=False)
    with (
        atomic_path(cache) as tmp,
        progress_bar(len(dataset), desc=f"activations {layer}", unit="frame", enabled=progress) as bar,
    ):
        _write_npy(tmp, (len(dataset), *shape), pieces, step, bar)
    write_text(stamp_path, json.dumps(stamp))
    return np.load(cache, mmap_mode="r")


def _write_npy(path: Path, shape: tuple[int, ...], pieces, step, bar) -> None:
    """The outputs of ``step`` over ``pieces``, one after another, as a float32 ``.npy`` of ``shape`` at ``path``
    (written through a memory map: the activations need not fit in memory)."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)

    def write(start: int, acts, batch) -> int:
        out[start : start + len(acts)] = np.asarray(acts).reshape(len(acts), *shape[1:])
        return start + len(acts)

    stream(pieces, step, fold=write, acc=0, bar=bar)
    out.flush()


class ActivationSource:
    """Samples of one layer: ``acts`` (N, H, W, C) over a dataset's frames, split into training and held-out
    samples by episode. A sample's index is ``(frame * H + y) * W + x``."""

    def __init__(self, acts: np.ndarray, episode_ids: np.ndarray, *, layer: str = ""):
        if acts.ndim != 4 or len(acts) != len(episode_ids):
            raise JaxinterpError(
                f"activations must be (N, H, W, C) with one episode id per frame, got {acts.shape} and "
                f"{len(episode_ids)} ids"
            )
        self.acts, self.layer = acts, layer
        self.frames, self.height, self.width, self.d_in = acts.shape
        self.positions = self.height * self.width
        self.samples = acts.reshape(-1, self.d_in)  # a view: the memory map stays on disk
        held = heldout_mask(episode_ids)
        self.train_frames, self.heldout_frames = np.flatnonzero(~held), np.flatnonzero(held)
        per_sample = np.repeat(held, self.positions)
        self.train_index = np.flatnonzero(~per_sample)
        self.heldout_index = np.flatnonzero(per_sample)
        if len(self.train_index) == 0 or len(self.heldout_index) == 0:
            raise JaxinterpError(
                f"{self.frames} frames of {len(np.unique(episode_ids))} episodes leave no training or no "
                f"held-out samples (every {HELDOUT_EVERY}th episode is held out); record a longer rollout"
            )
        self._perm_epoch, self._perm = -1, np.empty(0, np.int64)

    @classmethod
    def from_dataset(
        cls, agent: Agent, dataset: Dataset, layer: str, cache: str | os.PathLike, *, progress: bool = True
    ) -> ActivationSource:
        acts = layer_activations(agent, dataset, layer, cache, progress=progress)
        return cls(acts, dataset.column("episode_ids"), layer=layer)

    def where(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(frame, y, x) of sample indices."""
        frame, pos = np.divmod(np.asarray(index), self.positions)
        y, x = np.divmod(pos, self.width)
        return frame, y, x

    def _permutation(self, seed: int, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([seed, epoch]).permutation(len(self.train_index))
            self._perm_epoch = epoch
        return self._perm

    def batch_index(self, seed: int, step: int, batch_size: int) -> np.ndarray:
        """The training samples of batch ``step``: consecutive slices of per-epoch permutations."""
        n = len(self.train_index)
        flat = step * batch_size + np.arange(batch_size, dtype=np.int64)
        epochs, offsets = np.divmod(flat, n)
        out = np.empty(batch_size, np.int64)
        for e in np.unique(epochs):
            sel = epochs == e
            out[sel] = self._permutation(seed, int(e))[offsets[sel]]
        return self.train_index[out]

    def batch(self, seed: int, step: int, batch_size: int) -> np.ndarray:
        index = np.sort(self.batch_index(seed, step, batch_size))  # sorted reads from the memory map
        return np.asarray(self.samples[index], np.float32)

    def sample(self, n: int, *, heldout: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``n`` samples evenly spaced over the training (or held-out) set, and their indices."""
        index = evenly(self.heldout_index if heldout else self.train_index, n)
        return np.asarray(self.samples[index], np.float32), index


def evenly(pool: np.ndarray, n: int) -> np.ndarray:
    """Up to ``n`` entries of ``pool`` evenly spaced over it (its episodes and levels, not its first minutes)."""
    return pool[np.unique(np.linspace(0, len(pool) - 1, min(n, len(pool))).round().astype(np.int64))]


def geometric_median(x: np.ndarray, iterations: int = 64, eps: float = 1e-8) -> np.ndarray:
    """Weiszfeld's algorithm: the point minimizing the summed distance to the rows of ``x`` (float64)."""
    x = np.asarray(x, np.float64)
    m = x.mean(0)
    for _ in range(iterations):
        w = 1.0 / np.maximum(np.linalg.norm(x - m, axis=1), eps)
        new = (w[:, None] * x).sum(0) / w.sum()
        if np.linalg.norm(new - m) <= eps * (1 + np.linalg.norm(m)):
            return new
        m = new
    return m


def input_scale(x: np.ndarray) -> float:
    """The factor that gives samples a mean norm of sqrt(d_in) (SAELens' ``expected_average_only_in``)."""
    mean_norm = float(np.linalg.norm(np.asarray(x, np.float64), axis=1).mean())
    if not mean_norm > 0:
        raise JaxinterpError(
            "the layer's activations are all zero on these frames; nothing for an SAE to learn"
        )
    return float(np.sqrt(x.shape[1]) / mean_norm)
