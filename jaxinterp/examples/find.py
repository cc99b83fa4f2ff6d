"""``find_examples``: dataset examples of every feature of a layer in one streaming pass, with diverse patches."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from jaxinterp.atomic import atomic_path
from jaxinterp.errors import JaxinterpError
from jaxinterp.examples.features import Feature, as_feature, feature_ids
from jaxinterp.examples.patches import (
    DEFAULT_PAD_VALUE,
    DiversityOn,
    crop_positions,
    select_diverse,
    similarity,
)
from jaxinterp.examples.source import Source, source_size
from jaxinterp.examples.topk import DEFAULT_BATCH_SIZE, FrameScore, Ranked, ScanResult, scan
from jaxinterp.models.agent import Agent
from jaxinterp.models.receptive import ReceptiveField, receptive_field
from jaxinterp.progress import bar as progress_bar

__all__ = ["CANDIDATES_PER_EXAMPLE", "DEFAULT_K", "ExamplesResult", "find_examples", "load_npz", "save_npz"]

DEFAULT_K = 16
"""Examples per feature: two rows of a contact sheet."""

CANDIDATES_PER_EXAMPLE = 4
"""Position candidates kept per requested example (M = 4k), the pool diversity selection picks from."""

NPZ_FORMAT = "jaxinterp.examples/1"


class ExamplesResult(NamedTuple):
    """Examples of F features: every ``Ranked`` is (F, k) numpy; patches are uint8 (F, k, P, P, 3).

    ``top``/``bottom``: the highest/lowest-scoring frames (score: spatial max or mean), with the arg-max/arg-min
    position. ``positions``: the chosen top positions (diverse when ``diversity`` > 0) and ``patches`` under them;
    ``bottom_patches`` lie under ``bottom``'s positions. ``candidates``/``vectors`` are the (F, M) pool and their
    activation vectors, to re-select with ``select_diverse``; ``frames`` holds every frame referred to.
    """

    layer: str
    description: str
    ids: np.ndarray
    receptive_field: ReceptiveField
    top: Ranked
    bottom: Ranked
    positions: Ranked
    patches: np.ndarray
    bottom_patches: np.ndarray
    candidates: Ranked
    vectors: np.ndarray
    frames: dict[int, np.ndarray]
    num_frames: int
    frame_score: str
    diversity: float
    diversity_on: str


def _choose(scanned: ScanResult, k: int, diversity: float, diversity_on: DiversityOn, crops: dict) -> Ranked:
    """The top positions shown per feature: the best ``k`` candidates, chosen diverse when ``diversity`` > 0."""
    cand = scanned.candidates
    kk = min(k, cand.values.shape[1])
    if diversity == 0:  # candidates are sorted: plain top-k is their head
        return cand.take(np.broadcast_to(np.arange(kk), (cand.values.shape[0], kk)))
    if diversity_on == "pixels":  # all candidates' patches at once: F·M·P²·3 bytes (120 MB at P = 141)
        pool = crop_positions(scanned.frames, cand.frames, cand.ys, cand.xs, crops["rf"], size=crops["size"])
        sim = similarity(pool, "pixels")
    else:
        sim = similarity(scanned.vectors, "activations")
    return cand.take(select_diverse(cand.values, sim, kk, diversity))


def find_examples(
    agent: Agent,
    layer: str | Feature,
    source: Source,
    *,
    channels: Sequence[int] | int | None = None,
    k: int = DEFAULT_K,
    num_candidates: int | None = None,
    diversity: float = 0.0,
    diversity_on: DiversityOn = "activations",
    frame_score: FrameScore = "max",
    one_per_frame: bool = True,
    dedupe: bool = True,
    patch_size: int | None = None,
    pad_value: int = DEFAULT_PAD_VALUE,
    batch_size: int = DEFAULT_BATCH_SIZE,
    params=None,
    progress: bool = True,
) -> ExamplesResult:
    """Top-k and bottom-k frames, and top-k (diverse) receptive-field patches, of every feature, in one pass.

    ``layer``: a layer name (its ``channels``, all by default) or any ``Feature``. ``source``: a uint8 array
    (N, 64, 64, 3), a ``Dataset`` or an iterable of chunks (arrays, ``(frames, index)`` or ``{"frames", "index"}``).
    ``num_candidates`` defaults to ``4 k``; ``patch_size`` None crops the exact receptive field, an int a window
    of that size centred on it. ``diversity`` is the weight w in ``score - w * max cos`` (score units).
    ``dedupe`` counts exactly equal values as one example (see ``topk``); a feature with fewer distinct examples
    than k has slots with frame index ``EMPTY`` (-1), value -inf and a blank patch. ``progress`` shows a bar.
    """
    feature = as_feature(agent, layer, channels)
    if diversity_on not in ("activations", "pixels"):
        raise JaxinterpError(f"diversity_on must be 'activations' or 'pixels', got {diversity_on!r}")
    if diversity < 0:
        raise JaxinterpError(f"diversity must be >= 0 (0 = plain top-k), got {diversity}")
    m = CANDIDATES_PER_EXAMPLE * k if num_candidates is None else num_candidates
    options = {"frame_score": frame_score, "one_per_frame": one_per_frame, "dedupe": dedupe}
    options |= {"keep_vectors": diversity_on == "activations", "batch_size": batch_size, "params": params}
    with progress_bar(source_size(source), desc="examples", unit="frame", enabled=progress) as bar:
        scanned = scan(agent, feature, source, k=k, num_candidates=m, bar=bar, **options)
    crops = {"rf": receptive_field(agent, feature.layer), "size": patch_size, "pad_value": pad_value}
    positions, bottom = _choose(scanned, k, diversity, diversity_on, crops), scanned.bottom
    return ExamplesResult(
        layer=feature.layer,
        description=feature.description,
        ids=feature_ids(agent, feature),
        receptive_field=crops["rf"],
        top=scanned.top,
        bottom=bottom,
        positions=positions,
        patches=crop_positions(scanned.frames, positions.frames, positions.ys, positions.xs, **crops),
        bottom_patches=crop_positions(scanned.frames, bottom.frames, bottom.ys, bottom.xs, **crops),
        candidates=scanned.candidates,
        vectors=scanned.vectors,
        frames=scanned.frames,
        num_frames=scanned.num_frames,
        frame_score=frame_score,
        diversity=float(diversity),
        diversity_on=diversity_on,
    )


def save_npz(result: ExamplesResult, path: str | Path) -> Path:
    """Indices, positions and values of ``result`` (no pixels) as ``.npz``; ``load_npz`` reads it back."""
    arrays = {"format": np.asarray(NPZ_FORMAT), "layer": np.asarray(result.layer), "ids": result.ids}
    arrays["description"] = np.asarray(result.description)
    arrays["receptive_field"] = np.asarray(result.receptive_field, np.int64)
    arrays["num_frames"] = np.asarray(result.num_frames)
    arrays["frame_score"] = np.asarray(result.frame_score)
    arrays["diversity"] = np.asarray(result.diversity)
    arrays["diversity_on"] = np.asarray(result.diversity_on)
    for group in ("top", "bottom", "positions", "candidates"):
        for field, value in getattr(result, group)._asdict().items():
            arrays[f"{group}_{field}"] = np.asarray(value)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    return Path(path)


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays ``save_npz`` wrote, checked for its format tag."""
    with np.load(path) as data:
        if "format" not in data or str(data["format"]) != NPZ_FORMAT:
            raise JaxinterpError(f"{path} is not a jaxinterp examples file (expected format {NPZ_FORMAT})")
        return {k: data[k] for k in data.files}
