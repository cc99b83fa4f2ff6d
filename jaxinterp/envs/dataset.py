"""On-disk rollout datasets: chunked `.npy` files that memory-map, written atomically so they can be resumed.

Layout of a dataset directory::

    meta.json                      format, env config, seeds, policy, layer-name map, chunk list, resume state
    chunk_00000/frames.npy         uint8 (T, 64, 64, 3), the observation the policy saw
    chunk_00000/actions.npy        int32 (T,), the action taken on it
    chunk_00000/rewards.npy        float32 (T,), the reward that action earned
    chunk_00000/dones.npy          bool (T,), the episode ended with that action
    chunk_00000/episode_ids.npy    int64 (T,), unique across the dataset, stable across resumes
    chunk_00000/level_seeds.npy    int64 (T,), procgen level of that episode
    chunk_00000/objects.npy        uint8 (T, 64, 64), which game object each pixel shows (`envs.objects`)
    chunk_00000/act_<name>.npy     float32 (T, ...), one per recorded layer (`meta.json` maps names to files)
    state_<steps>.npz              the env state after the last chunk, to resume from

Rows are step-major: row `t * num_envs + i` is env `i` at step `t`; every chunk holds whole steps.
A chunk becomes part of the dataset only when `meta.json` (always written last, by rename) lists it, so an
interrupted write leaves the previous, consistent dataset.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxinterp.atomic import TMP_SUFFIX, atomic_path, write_npz, write_text
from jaxinterp.envs.heist import SUCCESS_REWARD, Episodes, EpisodeSummary, HeistConfig, HeistState
from jaxinterp.errors import JaxinterpError
from jaxinterp.models.agent import OBS_SHAPE

__all__ = [
    "ACTIVATION_DTYPE",
    "FIELDS",
    "FORMAT",
    "META_FILE",
    "VERSION",
    "Dataset",
    "DatasetWriter",
    "activation_file_stem",
]

FORMAT = "jaxinterp.rollout"
VERSION = 2  # 2 added `objects`
META_FILE = "meta.json"
# Per-row dtype and shape of the fields every dataset has; activations are added per layer.
FIELDS: dict[str, tuple[np.dtype, tuple[int, ...]]] = {
    "frames": (np.dtype(np.uint8), OBS_SHAPE),
    "actions": (np.dtype(np.int32), ()),
    "rewards": (np.dtype(np.float32), ()),
    "dones": (np.dtype(bool), ()),
    "episode_ids": (np.dtype(np.int64), ()),
    "level_seeds": (np.dtype(np.int64), ()),
    "objects": (np.dtype(np.uint8), OBS_SHAPE[:2]),
}
ACTIVATION_DTYPE = np.dtype(np.float32)
_CHUNK_RE = re.compile(r"chunk_\d{5}")
_STATE_RE = re.compile(r"state_\d{12}\.npz")
# Temporary names of an interrupted write: `jaxinterp.atomic`'s, and the ".tmp-" prefix of older versions.
_TMP_RE = re.compile(
    rf"\.tmp-.*|(chunk_\d{{5}}|state_\d{{12}}\.npz|{re.escape(META_FILE)}){re.escape(TMP_SUFFIX)}"
)
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def activation_file_stem(layer: str) -> str:
    """The file stem for a layer's activations: `conv_seqs.2.res_block1` -> `act_conv_seqs_2_res_block1`."""
    return "act_" + re.sub(r"[^A-Za-z0-9_]", "_", layer)


def _layer_map(layers: Sequence[str]) -> dict[str, str]:
    stems: dict[str, str] = {}
    for layer in layers:
        if layer in FIELDS or layer == "index":
            raise JaxinterpError(f"layer name {layer!r} clashes with a dataset field; rename the activation")
        stem = activation_file_stem(layer)
        clash = [other for other, s in stems.items() if s == stem]
        if clash:
            raise JaxinterpError(
                f"layers {clash[0]!r} and {layer!r} both map to file {stem}.npy; record only one of them"
            )
        stems[layer] = stem
    return stems


class DatasetWriter:
    """Appends chunks to a dataset directory; used by `rollout.collect`."""

    def __init__(self, path: Path, meta: dict[str, Any]):
        self.path = path
        self.meta = meta

    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        *,
        env_config: HeistConfig,
        seed: int,
        policy: str,
        layers: Sequence[str],
    ) -> DatasetWriter:
        """Start an empty dataset in `path`, which must not exist or be empty."""
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise JaxinterpError(
                f"{path} exists and is not a rollout dataset; pass a new or empty directory, "
                "or delete it to start over"
            )
        layer_map = _layer_map(layers)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "env_config": env_config.to_dict(),
            "seed": seed,
            "policy": policy,
            "num_envs": env_config.num_envs,
            "layers": layer_map,
            "chunks": [],
            "frames": 0,
            "steps": 0,
            "state": None,
        }
        writer = cls(path, meta)
        writer._write_meta(meta)
        return writer

    @classmethod
    def open(cls, path: str | os.PathLike) -> DatasetWriter:
        """Reopen an existing dataset to append to it, clearing leftovers of an interrupted write."""
        dataset = Dataset(path)
        writer = cls(dataset.path, dataset.meta)
        writer._remove_stale()
        return writer

    def resume_state(self) -> HeistState | None:
        """The env state after the last chunk, or None if nothing has been written yet."""
        if self.meta["state"] is None:
            return None
        with np.load(self.path / self.meta["state"], allow_pickle=False) as arrays:
            return HeistState.from_arrays(arrays)

    def append(self, arrays: Mapping[str, np.ndarray], state: HeistState) -> None:
        """Add one chunk (field and layer name -> array) and the env state reached after it."""
        n = len(arrays["frames"])
        if n == 0:
            return
        num_envs = self.meta["num_envs"]
        if n % num_envs or state.steps != self.meta["steps"] + n // num_envs:
            raise JaxinterpError(
                f"a chunk must hold whole steps ({num_envs} rows each) and end at the state's step; got {n} rows "
                f"after step {self.meta['steps']} with a state at step {state.steps}"
            )
        files = {name: np.asarray(arrays[name], dtype) for name, (dtype, _) in FIELDS.items()}
        for layer, stem in self.meta["layers"].items():
            files[stem] = np.asarray(arrays[layer], ACTIVATION_DTYPE)
        for stem, array in files.items():
            if len(array) != n:
                raise JaxinterpError(f"chunk field {stem} has {len(array)} rows, expected {n}")

        name = f"chunk_{len(self.meta['chunks']):05d}"
        # Left over from a run that died between this chunk's rename and the meta update: not part of the dataset.
        shutil.rmtree(self.path / name, ignore_errors=True)
        with atomic_path(self.path / name, directory=True) as tmp:
            for stem, array in files.items():
                with open(tmp / f"{stem}.npy", "wb") as f:
                    np.save(f, array, allow_pickle=False)

        state_name = f"state_{state.steps:012d}.npz"
        write_npz(self.path / state_name, **state.to_arrays())

        self._write_meta(
            {
                **self.meta,
                "chunks": [*self.meta["chunks"], {"name": name, "length": n}],
                "frames": self.meta["frames"] + n,
                "steps": state.steps,
                "state": state_name,
            }
        )
        self._remove_stale()

    def _write_meta(self, meta: dict[str, Any]) -> None:
        """Commit `meta` to disk; only then does this writer (and any reader) see the new chunk."""
        write_text(self.path / META_FILE, json.dumps(meta, indent=2))
        self.meta = meta

    def _remove_stale(self) -> None:
        """Delete files this module wrote but the meta does not reference (only names it owns)."""
        listed = {c["name"] for c in self.meta["chunks"]} | {self.meta["state"]}
        for entry in self.path.iterdir():
            owned = _TMP_RE.fullmatch(entry.name) or (
                (_CHUNK_RE.fullmatch(entry.name) or _STATE_RE.fullmatch(entry.name))
                and entry.name not in listed
            )
            if not owned:
                continue
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def _corrupt(path: Path, error: Exception) -> JaxinterpError:
    return JaxinterpError(
        f"rollout dataset {path} is corrupt ({type(error).__name__}: {error}); delete it and collect again"
    )


def _read_meta(path: Path) -> dict[str, Any]:
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise JaxinterpError(
            f"{path} is not a rollout dataset (no {META_FILE}); create one with jaxinterp.envs.rollout.collect"
        )
    try:
        meta = json.loads(meta_path.read_text())
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"{META_FILE} does not describe a {FORMAT} dataset")
        version = int(meta["version"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise _corrupt(path, e) from e
    if version > VERSION:
        raise JaxinterpError(
            f"{path} was written by a newer jaxinterp (format version {version} > {VERSION}); upgrade to read it"
        )
    if version < VERSION:
        raise JaxinterpError(
            f"{path} was written by an older jaxinterp (format version {version} < {VERSION}, without object "
            "maps); record it again with `jaxinterp rollout`"
        )
    return meta


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a `.npy` file, checking that the file holds all the data its header promises."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = _HEADER_READERS.get(version)
        if read_header is None:
            raise ValueError(f"unsupported .npy format version {version}")
        shape, fortran, dtype = read_header(f)
        offset = f.tell()
    if fortran:
        raise ValueError("Fortran-ordered arrays cannot be read row by row")
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = path.stat().st_size
    if actual != expected:
        raise ValueError(f"file has {actual} bytes, its header needs {expected}")
    return shape, dtype


class Dataset:
    """Read-only view of a rollout dataset; arrays are memory-mapped, so opening it costs nothing.

    Batches are dicts with the fields `frames`, `actions`, `rewards`, `dones`, `episode_ids`,
    `level_seeds`, `objects`, one entry per recorded layer (keyed by its original name), and `index` (global row).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.meta = meta = _read_meta(self.path)
        try:
            self.config = HeistConfig.from_dict(meta["env_config"])
            self.num_envs: int = meta["num_envs"]
            self.seed: int = meta["seed"]
            self.policy: str = meta["policy"]
            self._layers: dict[str, str] = meta["layers"]
            self._chunk_names = [c["name"] for c in meta["chunks"]]
            lengths = [int(c["length"]) for c in meta["chunks"]]
            self._row_shapes = self._check_chunks(lengths)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise _corrupt(self.path, e) from e
        self._offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
        self._open: tuple[int, dict[str, np.ndarray]] | None = None

    def _check_chunks(self, lengths: list[int]) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
        if sum(lengths) != self.meta["frames"]:
            raise ValueError(f"chunks hold {sum(lengths)} rows but meta.json says {self.meta['frames']}")
        row_shapes = dict(FIELDS)
        stems = {**{name: name for name in FIELDS}, **self._layers}
        for name, length in zip(self._chunk_names, lengths, strict=True):
            if length % self.num_envs:
                raise ValueError(f"{name} holds {length} rows, not whole steps of {self.num_envs} envs")
            for key, stem in stems.items():
                shape, dtype = _npy_header(self.path / name / f"{stem}.npy")
                expected = row_shapes.get(key, (ACTIVATION_DTYPE, shape[1:]))
                if shape[0] != length or (dtype, shape[1:]) != expected:
                    raise ValueError(
                        f"{name}/{stem}.npy is {dtype} {shape}, expected {expected[0]} {(length, *expected[1])}"
                    )
                row_shapes[key] = expected
        return row_shapes

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __repr__(self) -> str:
        return (
            f"Dataset({str(self.path)!r}, frames={len(self)}, num_envs={self.num_envs}, layers={self.layers})"
        )

    @property
    def num_steps(self) -> int:
        """Env steps recorded: `len(self) // num_envs`."""
        return len(self) // self.num_envs

    @property
    def layers(self) -> tuple[str, ...]:
        """Names of the recorded activations."""
        return tuple(self._layers)

    @property
    def fields(self) -> tuple[str, ...]:
        """Keys of every batch (besides `index`)."""
        return (*FIELDS, *self._layers)

    def row_shape(self, field: str) -> tuple[int, ...]:
        """Shape of one row of `field` (e.g. `(64, 64, 3)` for frames); layers are known once data exists."""
        if field not in self.fields:
            raise JaxinterpError(f"no field {field!r} in {self.path}; it has {self.fields}")
        if field not in self._row_shapes:
            raise JaxinterpError(f"layer {field!r} has no data yet in {self.path}")
        return self._row_shapes[field][1]

    def _chunk(self, i: int) -> dict[str, np.ndarray]:
        """Memory-maps of chunk `i`; one chunk stays open so sequential reads don't reopen files."""
        if self._open is None or self._open[0] != i:
            base = self.path / self._chunk_names[i]
            stems = {**{name: name for name in FIELDS}, **self._layers}
            self._open = (i, {k: np.load(base / f"{s}.npy", mmap_mode="r") for k, s in stems.items()})
        return self._open[1]

    def _select(self, fields: Sequence[str] | None) -> tuple[str, ...]:
        if fields is None:
            return self.fields
        unknown = [f for f in fields if f not in self.fields]
        if unknown:
            raise JaxinterpError(f"unknown fields {unknown} for {self.path}; it has {self.fields}")
        return tuple(fields)

    def _rows(self, start: int, stop: int, fields: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Rows [start, stop) as views when they lie in one chunk, else concatenated copies."""
        first = int(np.searchsorted(self._offsets, start, side="right")) - 1
        parts: dict[str, list[np.ndarray]] = {f: [] for f in fields}
        c = first
        while c < len(self._chunk_names) and self._offsets[c] < stop:
            lo, hi = (
                max(start, self._offsets[c]) - self._offsets[c],
                min(stop, self._offsets[c + 1]) - self._offsets[c],
            )
            arrays = self._chunk(c)
            for f in fields:
                parts[f].append(arrays[f][lo:hi])
            c += 1
        batch = {f: p[0] if len(p) == 1 else np.concatenate(p) for f, p in parts.items()}
        batch["index"] = np.arange(start, stop, dtype=np.int64)
        return batch

    def iter_chunks(
        self, chunk_size: int | None = None, fields: Sequence[str] | None = None
    ) -> Iterator[dict[str, np.ndarray]]:
        """Batches of `chunk_size` consecutive rows (the last may be shorter), or the stored chunks if None.

        Batches inside one stored chunk are read-only memory-mapped views; copy what you keep.
        """
        fields = self._select(fields)
        if chunk_size is None:
            bounds = zip(self._offsets[:-1], self._offsets[1:], strict=True)
        else:
            if chunk_size < 1:
                raise JaxinterpError(f"chunk_size (={chunk_size}) must be >= 1")
            bounds = ((s, min(s + chunk_size, len(self))) for s in range(0, len(self), chunk_size))
        for start, stop in bounds:
            yield self._rows(int(start), int(stop), fields)

    def get(
        self, index: int | slice | Sequence[int] | np.ndarray, fields: Sequence[str] | None = None
    ) -> dict:
        """Rows by global index (int, slice or integer array), gathered across chunks, in the order asked."""
        fields = self._select(fields)
        if isinstance(index, int | np.integer):
            rows = self.get(np.array([index]), fields)
            return {k: v[0] for k, v in rows.items()}
        idx = np.arange(len(self))[index] if isinstance(index, slice) else np.asarray(index)
        if not np.issubdtype(idx.dtype, np.integer) or idx.ndim != 1:
            raise JaxinterpError(
                f"index must be an int, a slice or a 1-D integer array, got {idx.dtype} {idx.shape}"
            )
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"row index out of range for a dataset of {len(self)} rows")
        idx = np.where(idx < 0, idx + len(self), idx).astype(np.int64)
        out = {f: np.empty((len(idx), *self.row_shape(f)), self._row_shapes[f][0]) for f in fields}
        chunk_of = np.searchsorted(self._offsets, idx, side="right") - 1
        for c in np.unique(chunk_of):
            where = np.flatnonzero(chunk_of == c)
            local = idx[where] - self._offsets[c]
            arrays = self._chunk(int(c))
            for f in fields:
                out[f][where] = arrays[f][local]
        out["index"] = idx
        return out

    def evenly_spaced(self, n: int, fields: Sequence[str] | None = ("frames",)) -> dict[str, np.ndarray]:
        """Up to ``n`` rows evenly spaced over the dataset: its episodes and levels, not its first minutes."""
        rows = np.linspace(0, len(self) - 1, min(n, len(self))).round().astype(np.int64)
        return self.get(np.unique(rows), fields)

    def __getitem__(self, index: int | slice | Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
        return self.get(index)

    def column(self, field: str) -> np.ndarray:
        """One field over the whole dataset, in memory (cheap for everything but frames and activations)."""
        (field,) = self._select([field])
        if len(self) == 0:
            dtype, shape = FIELDS.get(field, (ACTIVATION_DTYPE, ()))
            return np.zeros((0, *shape), dtype)
        return np.concatenate([self._chunk(c)[field] for c in range(len(self._chunk_names))])

    def episodes(self) -> Episodes:
        """Every episode in the dataset, ordered by episode id; the last one of each env may be incomplete."""
        ids = self.column("episode_ids")
        if len(ids) == 0:
            return Episodes.empty()
        rewards, dones = self.column("rewards"), self.column("dones")
        episode_id, first, inverse, length = np.unique(
            ids, return_index=True, return_inverse=True, return_counts=True
        )
        # Rows run forward in time, so an episode's last row is its largest.
        last = np.zeros(len(episode_id), np.int64)
        np.maximum.at(last, inverse, np.arange(len(ids)))
        complete = dones[last]
        return Episodes(
            episode_id=episode_id.astype(np.int64),
            env=(first % self.num_envs).astype(np.int64),
            level_seed=self.column("level_seeds")[first],
            first_step=(first // self.num_envs).astype(np.int64),
            length=length.astype(np.int64),
            episode_return=np.bincount(inverse, weights=rewards, minlength=len(episode_id)).astype(
                np.float32
            ),
            success=complete & (rewards[last] >= SUCCESS_REWARD),
            complete=complete,
        )

    def episode_rows(self, episode_id: int) -> np.ndarray:
        """Global row indices of one episode, in time order (rows of an episode are `num_envs` apart)."""
        rows = np.flatnonzero(self.column("episode_ids") == episode_id)
        if len(rows) == 0:
            raise JaxinterpError(
                f"no episode {episode_id} in {self.path}; see Dataset.episodes() for the ids"
            )
        return rows

    def summary(self) -> EpisodeSummary:
        """Mean return, success rate and mean length of the complete episodes."""
        return self.episodes().summary()
