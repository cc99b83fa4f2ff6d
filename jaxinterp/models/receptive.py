"""Exact receptive fields of every spatial activation, derived from each architecture's kernel/stride/padding chain.

Feature maps upsampled to the frame put each position on its field's centre (`upsample`).

A field along one axis is ``(jump, start, size)``: output position ``i`` sees input pixels
``[start + i * jump, start + i * jump + size)``, which may extend past the 64×64 frame (padding). Height and width
are alike (every kernel is square and symmetrically padded), so one triple serves both axes. A residual block's
field is the union of its skip and conv paths, which is the conv path's; a relu or identity changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple

import numpy as np

from jaxinterp.errors import JaxinterpError
from jaxinterp.models.agent import OBS_SHAPE, Agent

__all__ = [
    "CHAINS",
    "FRAME_SIZE",
    "WHOLE_FRAME",
    "ReceptiveField",
    "Step",
    "boxes",
    "chain_fields",
    "interpolation_matrix",
    "receptive_field",
    "receptive_fields",
    "upsample",
]

FRAME_SIZE = OBS_SHAPE[0]
"""Procgen frames are square, 64 pixels a side."""


class ReceptiveField(NamedTuple):
    """Input pixels ``[start + i * jump, start + i * jump + size)`` feed output position ``i`` (both axes)."""

    jump: int  # input pixels between neighbouring output positions: the product of the strides so far
    start: int  # first input pixel of position 0's field; negative where the field reaches into padding
    size: int  # field width in input pixels

    def box(self, y, x) -> tuple:
        """Half-open input box ``(y0, y1, x0, x1)`` of position ``(y, x)``; works on ints and integer arrays."""
        y0 = self.start + np.asarray(y) * self.jump
        x0 = self.start + np.asarray(x) * self.jump
        return y0, y0 + self.size, x0, x0 + self.size

    def center(self, i):
        """Continuous input coordinate of the centre of position ``i``'s field (pixel ``p`` spans [p, p + 1))."""
        return self.start + np.asarray(i) * self.jump + self.size / 2


WHOLE_FRAME = ReceptiveField(jump=FRAME_SIZE, start=0, size=FRAME_SIZE)
"""A dense layer sees every pixel: treated as a 1×1 map whose one position covers the frame."""

IDENTITY = ReceptiveField(jump=1, start=0, size=1)
"""The input image itself: each pixel sees only itself."""


class Step(NamedTuple):
    """One spatial operation of a chain and the activation names it produces (kernel 1 = no spatial change)."""

    names: tuple[str, ...]
    kernel: int = 1
    stride: int = 1
    padding: int = 0


def _compose(rf: ReceptiveField, step: Step) -> ReceptiveField:
    """Field after ``step``: its window of ``kernel`` positions, spaced ``jump`` apart, each seeing ``size``."""
    return ReceptiveField(
        jump=rf.jump * step.stride,
        start=rf.start - step.padding * rf.jump,
        size=rf.size + (step.kernel - 1) * rf.jump,
    )


def chain_fields(chain: tuple[Step, ...]) -> dict[str, ReceptiveField]:
    """Every name in ``chain`` mapped to its field, in chain order."""
    rf, out = IDENTITY, {}
    for step in chain:
        rf = _compose(rf, step)
        out.update({name: rf for name in step.names})
    return out


def _impala_chain(stages: list[str], names: tuple[str, ...], final_relu: bool = True) -> tuple[Step, ...]:
    """IMPALA stages: conv 3×3 pad 1 → max-pool 3×3/2 pad 1 → two residual blocks of two 3×3 convs.

    ``names`` = (conv, pool, block0, block1, block conv a, block conv b), as in ``models.impala._impala_stage``;
    each block records the relu of its input under the input's name, and the network ends with a relu.
    """
    conv, pool, blocks, (ca, cb) = names[0], names[1], names[2:4], names[4:6]
    chain: list[Step] = []
    for prefix in stages:
        chain.append(Step((f"{prefix}.{conv}",), 3, 1, 1))
        x_name = f"{prefix}.{pool}"
        chain.append(Step((x_name,), 3, 2, 1))
        for b in blocks:
            p = f"{prefix}.{b}"
            chain.append(Step((f"{x_name}.relu",)))
            chain.append(Step((f"{p}.{ca}", f"{p}.{ca}.relu"), 3, 1, 1))
            chain.append(Step((f"{p}.{cb}", p), 3, 1, 1))  # the block's sum: its conv path is the wider field
            x_name = p
        chain.append(Step((prefix,)))
    if final_relu:
        chain.append(Step((f"{stages[-1]}.relu",)))
    return tuple(chain)


def _impala(num_stages: int) -> tuple[Step, ...]:
    names = ("conv", "max_pool2d", "res_block0", "res_block1", "conv0", "conv1")
    return _impala_chain([f"conv_seqs.{i}" for i in range(num_stages)], names)


def _procgen_tools(num_stages: int) -> tuple[Step, ...]:
    names = ("conv", "max_pool", "res1", "res2", "conv1", "conv2")
    return _impala_chain([f"embedder.block{i + 1}" for i in range(num_stages)], names)


def _interpretable(num_stages: int) -> tuple[Step, ...]:
    """Convs (7×7 pad 3; 5×5 pad 2) each with a relu, and an L2 pool 2×2/2 closing every stage."""
    stages = (
        (("conv1a", 7, 3),),
        (("conv2a", 5, 2), ("conv2b", 5, 2)),
        (("conv3a", 5, 2),),
        (("conv4a", 5, 2),),
    )
    chain: list[Step] = []
    for i, convs in enumerate(stages[:num_stages]):
        chain += [Step((name, f"{name}.relu"), size, 1, pad) for name, size, pad in convs]
        chain.append(Step((f"pool{i + 1}",), 2, 2, 0))
    return tuple(chain)


CHAINS: dict[str, Callable[[int], tuple[Step, ...]]] = {
    "impala": _impala,
    "impala-procgen-tools": _procgen_tools,
    "interpretable-cnn": _interpretable,
}
"""Architecture name → chain builder taking the number of stages (IMPALA's ``channels`` may change it)."""

_DEFAULT_STAGES = 3  # IMPALA's (16, 32, 32); the interpretable CNN always has 4


def receptive_fields(agent: Agent) -> dict[str, ReceptiveField]:
    """Every spatial layer of ``agent`` mapped to its field, in forward order."""
    name = agent.arch.name
    if name not in CHAINS:
        raise JaxinterpError(
            f"no receptive-field chain for architecture {name!r}; add one to jaxinterp.models.receptive.CHAINS"
        )
    stages = len(getattr(agent.module, "channels", ())) or (
        4 if name == "interpretable-cnn" else _DEFAULT_STAGES
    )
    fields = chain_fields(CHAINS[name](stages))
    spatial = agent.conv_layer_names
    missing = [n for n in spatial if n not in fields]
    if missing:
        raise JaxinterpError(
            f"the {name} receptive-field chain lacks layers {missing}; update its builder in "
            "jaxinterp.models.receptive to match jaxinterp.models.impala"
        )
    return {n: fields[n] for n in spatial}


def receptive_field(agent: Agent, layer: str) -> ReceptiveField:
    """The field of ``layer``: exact for spatial layers, the whole frame for dense ones, identity for the input."""
    if layer == "input":
        return IDENTITY
    (layer,) = agent.check_layers([layer])
    if len(agent.layer_shapes[layer]) != 3:
        return WHOLE_FRAME
    return receptive_fields(agent)[layer]


def boxes(rf: ReceptiveField, ys, xs) -> np.ndarray:
    """Input boxes ``(..., 4)`` as ``(y0, y1, x0, x1)`` (half-open) for positions ``ys``, ``xs`` of any shape."""
    return np.stack(rf.box(ys, xs), axis=-1).astype(np.int64)


Method = Literal["nearest", "bilinear"]


def interpolation_matrix(n: int, rf: ReceptiveField, size: int = FRAME_SIZE, method: Method = "bilinear"):
    """(size, n) weights taking n positions to ``size`` pixels, position i placed at its field's centre.

    Pixel p (spanning [p, p + 1)) reads position ``u = (p + 0.5 - centre(0)) / jump``, clamped at the borders.
    """
    u = (np.arange(size) + 0.5 - rf.center(0)) / rf.jump
    u = np.clip(u, 0, n - 1)
    w = np.zeros((size, n), np.float32)
    rows = np.arange(size)
    if method == "nearest":
        w[rows, np.floor(u + 0.5).astype(int).clip(0, n - 1)] = 1
    elif method == "bilinear":
        lo = np.floor(u).astype(int).clip(0, n - 1)
        hi = np.minimum(lo + 1, n - 1)
        frac = (u - lo).astype(np.float32)
        np.add.at(w, (rows, lo), 1 - frac)
        np.add.at(w, (rows, hi), frac)
    else:
        raise JaxinterpError(f"upsampling method must be 'nearest' or 'bilinear', got {method!r}")
    return w


def upsample(
    maps, rf: ReceptiveField | None = None, *, size: int = FRAME_SIZE, method: Method = "bilinear"
) -> np.ndarray:
    """Maps (N, H, W) or (N, H, W, F) to (N, size, size[, F]); with ``rf``, each position sits on its field's centre.

    Without ``rf`` the map is stretched over the frame like an image resize (cell centres evenly spaced).
    """
    maps = np.asarray(maps, np.float32)
    squeeze = maps.ndim == 3
    maps = maps[..., None] if squeeze else maps
    if maps.ndim != 4 or maps.shape[1] != maps.shape[2]:
        raise JaxinterpError(f"maps must be (N, H, W) or (N, H, W, F) with H == W, got {maps.shape}")
    h = maps.shape[1]
    if rf is None:
        jump = size / h
        rf = ReceptiveField(jump=jump, start=0, size=jump)
    w = interpolation_matrix(h, rf, size, method)
    out = np.einsum("ph,nhwf,qw->npqf", w, maps, w)
    return out[..., 0] if squeeze else out
