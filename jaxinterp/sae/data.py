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
from tqdm import tqdm

from jaxinterp.envs.dataset import Dataset
from jaxinterp.errors import JaxinterpError
from jaxinterp.models.agent import Agent

HELDOUT_EVERY = 10
"""Episodes whose id is ``HELDOUT_EVERY - 1`` modulo this are held out: a tenth of the play, whole episodes."""

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
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.name + ".tmp")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(dataset), *shape))
    stored = layer in dataset.layers
    fields = [layer] if stored else ["frames"]
    start = 0
    with tqdm(total=len(dataset), unit="frame", desc=f"activations {layer}", disable=not progress) as bar:
        for chunk in dataset.iter_chunks(CHUNK_FRAMES, fields=fields):
            acts = chunk[layer] if stored else np.asarray(agent.activations(chunk["frames"], [layer])[layer])
            out[start : start + len(acts)] = acts.reshape(len(acts), *shape)
            start += len(acts)
            bar.update(len(acts))
    out.flush()
    del out
    os.replace(tmp, cache)
    stamp_path.write_text(json.dumps(stamp))
    return np.load(cache, mmap_mode="r")


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
        held = np.asarray(episode_ids) % HELDOUT_EVERY == HELDOUT_EVERY - 1
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
