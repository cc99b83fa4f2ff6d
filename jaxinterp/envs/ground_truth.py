"""Where Heist's objects are in each observation: a per-pixel label map read from procgen's own game state.

procgen serializes a game as a flat buffer of little-endian int32/float32 fields (``procgen/src/buffer.h``; the
field order is ``Game::serialize``, ``BasicAbstractGame::serialize``, ``Entity::serialize`` and
``HeistGame::serialize`` of procgen 0.10). Reading it gives the exact wall grid and every entity's rectangle, which
are painted here the way procgen paints the 64x64 observation (grid first, then entities by ``render_z``). The
labels are ground truth, not a colour heuristic, so channels can be matched to game objects by measurement
(`jaxinterp.examples.object_response`).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import numpy as np

from jaxinterp.errors import JaxinterpError

__all__ = [
    "OBJECT_CLASSES",
    "Entity",
    "HeistLayout",
    "object_map",
    "object_maps",
    "parse_state",
    "read_entities",
    "to_pixels",
]

OBJECT_CLASSES = (
    "floor",
    "wall",
    "agent",
    "gem",
    "key_blue",
    "key_green",
    "key_red",
    "lock_blue",
    "lock_green",
    "lock_red",
    "held_key_blue",
    "held_key_green",
    "held_key_red",
)
"""Label ``i`` of an object map is ``OBJECT_CLASSES[i]``; colours are procgen's themes 0, 1, 2 (heist.cpp's assets)."""

_COLOURS = ("blue", "green", "red")
# procgen ids (object-ids.h, heist.cpp): grid cells and entity types.
_WALL_OBJ, _PLAYER, _LOCKED_DOOR, _KEY, _EXIT, _KEY_ON_RING = 51, 0, 1, 2, 9, 11
_SERIALIZE_VERSION = 0
_RES = 64
_ENTITY_FIELDS = "ffffffiiiiiifffiiiiiifiiiffffff"  # Entity::serialize, 31 fields
_ENTITY = np.dtype([(f"f{i}", "<f4" if c == "f" else "<i4") for i, c in enumerate(_ENTITY_FIELDS)])
_LABEL = {name: i for i, name in enumerate(OBJECT_CLASSES)}


class Entity(NamedTuple):
    """One procgen entity as it is drawn: type id, colour theme, centre and half extents (world units)."""

    type: int
    theme: int
    x: float
    y: float
    rx: float
    ry: float
    render_z: int
    abs_coords: bool  # a HUD item: coordinates are fractions of the view, y from the top
    turned: bool  # drawn rotated by 90 degrees, so its width and height swap on screen


class HeistLayout(NamedTuple):
    """The parts of one Heist game state that decide what the observation shows."""

    grid: np.ndarray  # int32 (h, w), procgen's object id per cell; row 0 is the bottom of the world
    entities: tuple[Entity, ...]
    has_keys: tuple[bool, ...]
    visibility: float  # world units across the 64-pixel view
    center: tuple[float, float]


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.offset = data, 0

    def take(self, fmt: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        if self.offset + size > len(self.data):
            raise JaxinterpError("procgen state ended early: not a Heist state of procgen 0.10's format")
        values = struct.unpack_from("<" + fmt, self.data, self.offset)
        self.offset += size
        return values

    def int(self) -> int:
        return self.take("i")[0]

    def skip(self, fmt: str) -> None:
        self.take(fmt)

    def string(self) -> bytes:
        n = self.int()
        return self.take(f"{n}s")[0]


def _read_entities(r: _Reader) -> tuple[Entity, ...]:
    """The header of a serialized Heist game, then its entities (those not erased before the frame is drawn)."""
    if r.int() != _SERIALIZE_VERSION or r.string() != b"heist":
        raise JaxinterpError("not a serialized procgen Heist game (wrong version or game name)")
    # Game::serialize: 12 option ints, grid_step, level seeds low/high, game_type, game_n, two RandGens.
    r.skip("12i5i")
    for _ in range(2):
        r.int()
        r.string()
    r.skip("fiiiiiiiiifiiii")  # step data, action/timeout, seeds/episodes, reward timer, time
    # BasicAbstractGame::serialize
    r.int()  # grid_size
    n = r.int()
    if not 0 <= n <= (len(r.data) - r.offset) // _ENTITY.itemsize:
        raise JaxinterpError("procgen state ended early: not a Heist state of procgen 0.10's format")
    table = np.frombuffer(r.data, _ENTITY, n, r.offset)  # one read for every entity's fields
    r.offset += n * _ENTITY.itemsize
    table = table[table["f10"] == 0]  # will_erase: gone before the frame is drawn
    columns = (table[f] for f in ("f6", "f8", "f0", "f1", "f4", "f5", "f9", "f20"))
    turned = np.abs(np.sin(table["f13"].astype(np.float64))) > 0.5  # rotation
    return tuple(
        Entity(etype, theme, x, y, rx, ry, render_z, bool(abs_coords), bool(t))
        for etype, theme, x, y, rx, ry, render_z, abs_coords, t in zip(
            *(c.tolist() for c in columns), turned.tolist(), strict=True
        )
    )


def read_entities(data: bytes) -> tuple[Entity, ...]:
    """Only the entities of one serialized Heist game (the agent, keys, locks, gem): the part of `parse_state`
    that changes as the agent plays, read without the grid that follows it."""
    return _read_entities(_Reader(data))


def parse_state(data: bytes) -> HeistLayout:
    """The wall grid, entities and held keys of one serialized Heist game (``ProcgenGym3Env.get_state()[i]``)."""
    r = _Reader(data)
    entities = _read_entities(r)
    # background (iiff), char_dim .. max_jump (fiiifff), action_v* (fff), center_x/y, agent start .. step_rand_int
    *_, center_x, center_y, _, _, _ = r.take("iifffiiiffffffffiii")
    r.int()
    r.string()  # asset_rand_gen
    r.skip("iii")  # main_width, main_height, out_of_bounds_object
    _, _, _, _, visibility, _ = r.take("ffffff")  # unit, view_dim, x_off, y_off, visibility, min_visibility
    w, h = r.take("ii")
    n = r.int()
    if not 0 < w * h == n <= len(data) // 4:
        raise JaxinterpError(
            f"procgen state holds a {w}x{h} grid of {n} cells: not procgen 0.10's Heist format"
        )
    grid = np.asarray(r.take(f"{n}i"), np.int32).reshape(h, w)
    r.skip("ii")  # num_keys, world_dim
    has_keys = tuple(bool(v) for v in r.take(f"{r.int()}i"))
    return HeistLayout(grid, entities, has_keys, visibility, (center_x, center_y))


def _entity_label(e: Entity, has_keys: tuple[bool, ...]) -> int | None:
    if e.type == _PLAYER:
        return _LABEL["agent"]
    if e.type == _EXIT:
        return _LABEL["gem"]
    if e.type == _KEY:
        return _LABEL[f"key_{_COLOURS[e.theme]}"]
    if e.type == _LOCKED_DOOR:
        return _LABEL[f"lock_{_COLOURS[e.theme]}"]
    if e.type == _KEY_ON_RING and e.theme < len(has_keys) and has_keys[e.theme]:
        return _LABEL[f"held_key_{_COLOURS[e.theme]}"]
    return None


def _view(layout: HeistLayout) -> tuple[float, float, float]:
    """Pixels per world unit and the view's offsets (procgen's ``get_screen_rect``)."""
    unit = _RES / layout.visibility
    return (
        unit,
        unit * (layout.center[0] - layout.visibility / 2),
        unit * (layout.center[1] - layout.visibility / 2),
    )


def to_pixels(layout: HeistLayout, x, y) -> np.ndarray:
    """(..., 2) observation pixel coordinates (column, row; fractional) of world points ``(x, y)`` in the view of
    ``layout`` (world y grows upwards, rows downwards)."""
    unit, x_off, y_off = _view(layout)
    return np.stack([np.asarray(x) * unit - x_off, y_off + (layout.visibility - np.asarray(y)) * unit], -1)


def object_map(layout: HeistLayout) -> np.ndarray:
    """uint8 (64, 64) labels (indices into `OBJECT_CLASSES`) of the observation this layout renders to.

    A pixel takes the label of the last thing procgen paints over its centre: floor and walls from the grid, then
    entities in ``render_z`` order (the agent and the held keys on top).
    """
    unit, x_off, y_off = _view(layout)
    centres = np.arange(_RES) + 0.5
    # World coordinates of pixel centres (procgen's get_screen_rect, inverted; world y grows upwards).
    wx = (centres + x_off) / unit
    wy = layout.visibility - (centres - y_off) / unit
    h, w = layout.grid.shape
    cx, cy = np.floor(wx).astype(int), np.floor(wy).astype(int)
    inside = (cx[None, :] >= 0) & (cx[None, :] < w) & (cy[:, None] >= 0) & (cy[:, None] < h)
    cells = layout.grid[np.clip(cy, 0, h - 1)[:, None], np.clip(cx, 0, w - 1)[None, :]]
    wall = np.where(inside, cells == _WALL_OBJ, True)  # out of bounds is wall in Heist
    labels = np.where(wall, _LABEL["wall"], _LABEL["floor"]).astype(np.uint8)
    for e in sorted(layout.entities, key=lambda e: e.render_z):  # stable: same z keeps serialization order
        label = _entity_label(e, layout.has_keys)
        if label is None:
            continue
        # Rotated images turn about their rectangle's centre, so a quarter turn swaps the half extents.
        hx, hy = (e.ry, e.rx) if e.turned else (e.rx, e.ry)
        if e.abs_coords:
            # get_abs_rect: fractions of the view measured down from the top; the rectangle procgen builds from
            # (x - rx, y + ry) spans y + ry .. y + 3 ry, so its centre is y + 2 ry.
            u = centres / _RES
            in_x = np.abs(u - e.x) < hx
            in_y = np.abs(u - (e.y + 2 * e.ry)) < hy
        else:
            in_x = (wx >= e.x - hx) & (wx < e.x + hx)
            in_y = (wy > e.y - hy) & (wy <= e.y + hy)
        labels[np.ix_(in_y, in_x)] = label
    return labels


def object_maps(states) -> np.ndarray:
    """uint8 (N, 64, 64) object maps for a sequence of serialized Heist games (e.g. ``HeistEnv.get_state().procgen``)."""
    return (
        np.stack([object_map(parse_state(s)) for s in states])
        if len(states)
        else np.zeros((0, _RES, _RES), np.uint8)
    )
