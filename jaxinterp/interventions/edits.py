"""Edits of a layer's activation inside the jitted forward: ablate (zero, mean, resample), set, add or scale at
chosen positions (steering), patch from another frame; on channels or on SAE latents.

Every edit is one affine form in a basis. With ``codes = encode(acts)`` (the channels themselves, or an SAE's
latents) and per-unit arrays ``mask``, ``scale``, ``offset`` (H, W, F):

    codes' = codes + mask * ((scale - 1) * codes + offset)        acts' = acts + decode(codes' - codes)

so zeroing is ``scale 0, offset 0``, setting ``scale 0, offset v``, adding ``scale 1, offset v``, a mean ablation
``scale 0, offset mean``, a resample ablation ``scale 0`` plus a frame drawn from a bank of dataset codes each step,
a patch ``scale 0, offset`` the codes of the patched frame. On SAE latents the SAE's error term is kept (only the
change of the decoded latents is added), and an empty edit (mask 0) adds an exact zero: the clean forward, bit for
bit. Strengths are array values, so a sweep over edits, strengths or channels of one layer is one compile.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.errors import JaxinterpError
from jaxinterp.models.agent import Agent, parse_channels

__all__ = [
    "OPS",
    "Edit",
    "EditArrays",
    "Slot",
    "apply_slot",
    "compile_edits",
    "describe",
    "parse_edits",
]

Op = Literal["zero", "mean", "resample", "set", "add", "scale", "patch"]
OPS: tuple[str, ...] = ("zero", "mean", "resample", "set", "add", "scale", "patch")
SAE_TARGET = "sae"
"""The target name of SAE latents in an edit string (``sae:12=0``); the SAE says which layer it reads."""

_EDIT = re.compile(
    r"^\s*(?P<target>[\w.]+)\s*:\s*(?P<units>[\w,\- ]+?)\s*(?P<op>\+=|\*=|=)\s*(?P<value>[^@]+?)\s*"
    r"(?:@\s*(?P<x>\d+)\s*,\s*(?P<y>\d+))?\s*$"
)
_FORMS = (
    "LAYER:CH=0 (zero), LAYER:CH=mean, LAYER:CH=resample, LAYER:CH=V[@X,Y] (set), LAYER:CH+=V[@X,Y] (add), "
    "LAYER:CH*=S (scale), LAYER:CH=frame:N (patch from dataset frame N); CH as all, 3, 0-15 or 1,4; "
    "sae:LATENT... for SAE latents; several edits joined by ';'"
)


@dataclasses.dataclass(frozen=True)
class Edit:
    """One edit of one layer: ``op`` on ``units`` (channels, or SAE latents when ``target`` is ``"sae"``) at
    every position, or only at ``at`` = (x, y) (column first, as ``neuron@x,y``)."""

    layer: str
    units: str = "all"
    op: Op = "zero"
    value: float = 0.0
    at: tuple[int, int] | None = None
    frame: int | None = None
    """The dataset frame whose codes a ``patch`` writes in."""
    target: Literal["channels", "sae"] = "channels"

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise JaxinterpError(f"edit op {self.op!r} is not one of {', '.join(OPS)}")
        if self.op == "patch" and self.frame is None:
            raise JaxinterpError("a patch edit needs the frame to patch from: LAYER:CH=frame:N")

    def __str__(self) -> str:
        head = f"{SAE_TARGET if self.target == 'sae' else self.layer}:{self.units}"
        body = {
            "zero": "=0",
            "mean": "=mean",
            "resample": "=resample",
            "set": f"={self.value:g}",
            "add": f"+={self.value:g}",
            "scale": f"*={self.value:g}",
            "patch": f"=frame:{self.frame}",
        }[self.op]
        return head + body + (f"@{self.at[0]},{self.at[1]}" if self.at else "")


def describe(edits: Sequence[Edit]) -> str:
    """The string form of a list of edits (``parse_edits`` reads it back); ``clean`` for none."""
    return "; ".join(str(e) for e in edits) or "clean"


def _parse_one(text: str, sae_layer: str | None) -> Edit:
    m = _EDIT.match(text)
    if m is None:
        raise JaxinterpError(f"cannot read the edit {text.strip()!r}; the forms are {_FORMS}")
    target, units, sign, value = m["target"], m["units"].replace(" ", ""), m["op"], m["value"].strip()
    at = (int(m["x"]), int(m["y"])) if m["x"] is not None else None
    kind = "sae" if target == SAE_TARGET else "channels"
    if kind == "sae" and sae_layer is None:
        raise JaxinterpError(f"the edit {text.strip()!r} edits SAE latents: give the SAE (--sae DIR)")
    layer = sae_layer if kind == "sae" else target
    fields = {"layer": layer, "units": units, "at": at, "target": kind}
    if sign == "=" and value in ("mean", "resample"):
        return Edit(op=value, **fields)
    if sign == "=" and value.startswith("frame:"):
        return Edit(op="patch", frame=_number(value[6:], text, int), **fields)
    number = _number(value, text, float)
    op = {"+=": "add", "*=": "scale"}.get(sign) or ("zero" if number == 0 and at is None else "set")
    return Edit(op=op, value=number, **fields)


def _number(value: str, text: str, kind: type) -> float | int:
    try:
        return kind(value)
    except ValueError:
        raise JaxinterpError(
            f"cannot read {value!r} in the edit {text.strip()!r} as a number; the forms are {_FORMS}"
        ) from None


def parse_edits(text: str, *, sae_layer: str | None = None) -> tuple[Edit, ...]:
    """Edits from their string form, e.g. ``"conv_seqs.2.res_block1:7=0; conv_seqs.2.res_block1:3+=2@4,5"``;
    ``""`` or ``"clean"`` is no edit. ``sae_layer`` is the layer of the SAE that ``sae:`` edits address."""
    text = text.strip()
    if text in ("", "clean"):
        return ()
    return tuple(_parse_one(part, sae_layer) for part in text.split(";") if part.strip())


class Slot(NamedTuple):
    """The static half of one edited (layer, basis): which layer, and whether codes are channels or SAE latents."""

    layer: str
    target: str
    sae_arch: str = ""
    sae_k: int = 0


class EditArrays(NamedTuple):
    """The array half for E edits of one slot (F = channels or latents); E is the leading axis of every field."""

    mask: jax.Array  # (E, H, W, F) 1 where the edit applies
    scale: jax.Array  # (E, H, W, F) what the code is multiplied by there
    offset: jax.Array  # (E, H, W, F) what is added there
    resample: jax.Array  # (E, H, W, F) 1 where the code is replaced by a bank frame's
    bank: jax.Array  # (B, H, W, F) codes of dataset frames that resample ablations draw from
    sae: object = None  # the SAE's params for an SAE slot


def encode(slot: Slot, arrays: EditArrays, acts: jax.Array) -> jax.Array:
    if slot.target == "channels":
        return acts
    from jaxinterp.sae import model as sae_model

    return sae_model.encode(slot.sae_arch, arrays.sae, acts, jnp.int32(slot.sae_k))


def _decode_change(slot: Slot, arrays: EditArrays, change: jax.Array) -> jax.Array:
    """What a change of codes does to the activation: itself for channels, ``change @ W_dec`` for latents (the
    decoder's bias cancels, so the SAE's reconstruction error stays in the activation)."""
    return change if slot.target == "channels" else change @ arrays.sae.W_dec


def apply_slot(
    slot: Slot, arrays: EditArrays, which: jax.Array, acts: jax.Array, key: jax.Array
) -> jax.Array:
    """``acts`` (N, H, W, C) with edit ``which[i]`` applied to row i; ``key`` draws the resample frames."""
    codes = encode(slot, arrays, acts)
    mask, scale, offset, resample = (x[which] for x in arrays[:4])
    drawn = arrays.bank[jax.random.randint(key, (len(which),), 0, arrays.bank.shape[0])]
    offset = offset + resample * drawn
    change = mask * ((scale - 1) * codes + offset)
    return acts + _decode_change(slot, arrays, change)


def _units(edit: Edit, n: int) -> list[int]:
    what = "the SAE" if edit.target == "sae" else f"layer {edit.layer!r}"
    return parse_channels(edit.units, n, what)


def _check_at(edit: Edit, h: int, w: int) -> None:
    if edit.at is not None and not (0 <= edit.at[0] < w and 0 <= edit.at[1] < h):
        raise JaxinterpError(
            f"position x={edit.at[0]}, y={edit.at[1]} of the edit {edit} is outside layer {edit.layer!r}, "
            f"whose positions are x 0-{w - 1}, y 0-{h - 1}"
        )


def _codes_of(slot: Slot, agent: Agent, frames: np.ndarray, sae_params) -> np.ndarray:
    acts = agent.activations(frames, [slot.layer])[slot.layer]
    arrays = EditArrays(*(None,) * 5, sae=sae_params)
    return np.asarray(encode(slot, arrays, acts))


def compile_edits(
    agent: Agent,
    edit_lists: Sequence[Sequence[Edit]],
    *,
    frames: np.ndarray | None = None,
    sae=None,
    bank_size: int = 256,
    seed: int = 0,
) -> dict[Slot, EditArrays]:
    """The arrays of every slot that ``edit_lists`` touch (one list per row of the sweep; an empty list is the
    clean policy). ``frames`` (uint8 dataset frames) give means, resample banks and patches; ``sae`` a loaded
    `jaxinterp.sae.SAE` for ``sae:`` edits."""
    slots: dict[Slot, list[tuple[int, Edit]]] = {}
    for row, edits in enumerate(edit_lists):
        for edit in edits:
            agent.check_layers([edit.layer])
            slot = (
                Slot(edit.layer, "sae", sae.arch, int(sae.k))
                if edit.target == "sae"
                else Slot(edit.layer, "channels")
            )
            slots.setdefault(slot, []).append((row, edit))
    return {
        slot: _slot_arrays(agent, slot, edits, len(edit_lists), frames, sae, bank_size, seed)
        for slot, edits in slots.items()
    }


def _slot_arrays(agent, slot, edits, rows, frames, sae, bank_size, seed) -> EditArrays:
    h, w = agent.layer_shapes[slot.layer][:2]
    f = sae.d_sae if slot.target == "sae" else agent.layer_shapes[slot.layer][-1]
    if slot.target == "sae" and sae.d_in != agent.layer_shapes[slot.layer][-1]:
        raise JaxinterpError(f"the SAE reads {sae.d_in} channels but {slot.layer!r} has a different width")
    mask, scale = np.zeros((rows, h, w, f), np.float32), np.ones((rows, h, w, f), np.float32)
    offset, resample = np.zeros_like(mask), np.zeros_like(mask)
    needs_frames = {e.op for _, e in edits} & {"mean", "resample", "patch"}
    if needs_frames and frames is None:
        raise JaxinterpError(f"{', '.join(sorted(needs_frames))} edits need dataset frames (--dataset)")
    sae_params = sae.params if slot.target == "sae" else None
    codes = _codes_of(slot, agent, frames, sae_params) if needs_frames else None
    for row, edit in edits:
        units = _units(edit, f)
        _check_at(edit, h, w)
        where = np.zeros((h, w, f), bool)
        ys, xs = (slice(None), slice(None)) if edit.at is None else (edit.at[1], edit.at[0])
        where[ys, xs, units] = True
        mask[row][where] = 1
        scale[row][where] = {"add": 1.0, "scale": edit.value}.get(edit.op, 0.0)
        offset[row] = np.where(where, _offset(edit, codes), offset[row])
        if edit.op == "resample":
            resample[row][where] = 1
    rng = np.random.default_rng(seed)
    bank = (
        codes[rng.choice(len(codes), min(bank_size, len(codes)), replace=False)]
        if codes is not None
        else None
    )
    bank = np.zeros((1, h, w, f), np.float32) if bank is None else bank
    return EditArrays(*(jnp.asarray(x) for x in (mask, scale, offset, resample, bank)), sae=sae_params)


def _offset(edit: Edit, codes: np.ndarray | None) -> np.ndarray | float:
    """What ``edit`` adds where it applies: its value, the dataset mean, or the patched frame's codes."""
    if edit.op in ("set", "add"):
        return edit.value
    if edit.op == "mean":
        return codes.mean(0)
    if edit.op == "patch":
        if not 0 <= edit.frame < len(codes):
            raise JaxinterpError(
                f"the patch {edit} names frame {edit.frame}, but there are frames 0-{len(codes) - 1}"
            )
        return codes[edit.frame]
    return 0.0
