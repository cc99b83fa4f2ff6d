"""Transformation robustness for feature visualization: random pad, jitter, scale and rotation in one resample.

Each transform is a 3×3 homogeneous matrix in pixel coordinates; `sample_matrix` draws and multiplies them, and
`apply` does a single bilinear gather per image (padding happens inside the sampling), so the chain costs one
resample instead of one per transform.

Geometry. Coordinates are (row, col) of pixel centres. lucid pads, crops randomly, rescales, rotates, crops
again and, for a fixed-size network, centre-crops back to the input size; here that whole chain is one map
from output pixels to source pixels, evaluated at the 64×64 output grid. The output is therefore the input's
size, showing a randomly shifted, scaled and rotated view of the image with the padding visible at the
borders: what lucid's chain followed by a centre crop to 64×64 shows, up to its resampling details.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Literal

import jax
import jax.numpy as jnp

from jaxinterp.errors import JaxinterpError

__all__ = [
    "DEFAULT_ANGLES_DEG",
    "DEFAULT_JITTERS",
    "DEFAULT_PAD",
    "DEFAULT_PAD_VALUE",
    "DEFAULT_SCALES",
    "NEURON_JITTERS",
    "PAD_MODES",
    "Transform",
    "apply",
    "max_zoom",
    "no_transforms",
    "resample",
    "sample_matrix",
    "standard_transforms",
]

MAX_GATHER_REACH = 2
"""The gather adjoint reads (2 reach + 1)² neighbours; past 25 (zooms over ~2.5×) XLA's scatter-add is cheaper
(measured: one scatter-add ≈ 35 of these reads on a 2-core CPU)."""

_REACH_SLACK = 1e-3
"""Margin for float error in A⁻¹p (~1e-5 px) when choosing the gather adjoint's reach."""

PadMode = Literal["constant", "reflect"]
PAD_MODES: tuple[str, ...] = ("constant", "reflect")

DEFAULT_PAD = 16
"""A quarter of a 64-px frame: about the farthest the default draws sample past the image (8 + 4 px of jitter
plus ~4 px that a 5% zoom-out and 5° turn pull in at the corners), so reflect-padded views stay on the padded
canvas; in constant mode any pad ≥ 1 gives the same images."""

DEFAULT_PAD_VALUE = 0.5
"""Mid-grey, the colour of sigmoid(0): padding adds no bright or dark edge for the network to respond to."""

DEFAULT_JITTERS = (16, 8)
"""lucid's jitter(d) semantics: a random crop d px smaller, i.e. a shift uniform over the integers in
[-d/2, d/2] (±8 then ±4 px). The first jitter comes before scale and rotation, the others after."""

NEURON_JITTERS = (8, 4)
"""Jitter for one-position (neuron) objectives, ±4 then ±2 px. The default's up to ±12 px moves the target under
the image by 1.5 cells of the last stage, so the image must paint its feature over a wide blob; with these the
centre neurons reach higher values and beat their real-frame percentiles more often, and still less jitter gives
adversarial high-frequency patterns (measured: `benchmarks/HISTORY.md`)."""

DEFAULT_SCALES = (0.95, 0.975, 1.025, 1.05)
"""Random zoom about the centre, within ±5% so content at the border of a 64-px frame moves by at most ~1.6 px."""

DEFAULT_ANGLES_DEG = tuple(float(a) for a in range(-5, 6))
"""Rotations uniform over the whole degrees in ±5°: lucid used ±10° on 224-px images; 64-px Procgen frames
are axis-aligned sprites, so a smaller range keeps features recognisable."""


@dataclasses.dataclass(frozen=True)
class Transform:
    """A random-transform spec (static, hashable): pad → jitter → scale → rotate → jitter, one resample."""

    pad: int = DEFAULT_PAD
    """Padding width around the image; samples beyond it repeat the padded canvas's edge (pad=0: the image's)."""
    pad_mode: PadMode = "constant"
    """'constant' fills with `pad_value`; 'reflect' mirrors the image without repeating the edge pixel."""
    pad_value: float = DEFAULT_PAD_VALUE
    """Fill colour for 'constant' padding."""
    jitters: tuple[int, ...] = DEFAULT_JITTERS
    """Random-crop sizes in px: jitters[0] before scale and rotation, the rest after."""
    scales: tuple[float, ...] = DEFAULT_SCALES
    """Zoom factors to choose from uniformly (> 1 magnifies)."""
    angles_deg: tuple[float, ...] = DEFAULT_ANGLES_DEG
    """Rotation angles in degrees to choose from uniformly (positive: counter-clockwise on screen)."""
    magnitude: float = 1.0
    """Strength of every random draw: shifts and angles times it, scales to its power; 0 gives the identity."""

    def __post_init__(self) -> None:
        """Coerce sequences to tuples (so the spec stays hashable for `jit`) and reject impossible values."""
        for name in ("jitters", "scales", "angles_deg"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not isinstance(self.pad, int) or self.pad < 0:
            raise JaxinterpError(f"`pad` (={self.pad!r}) must be an int >= 0")
        if self.pad_mode not in PAD_MODES:
            raise JaxinterpError(f"`pad_mode` (={self.pad_mode!r}) must be one of {PAD_MODES}")
        if any(not isinstance(d, int) or d < 0 for d in self.jitters):
            raise JaxinterpError(f"`jitters` (={self.jitters!r}) must be ints >= 0 (crop sizes in px)")
        if not self.scales or any(not s > 0 for s in self.scales):
            raise JaxinterpError(f"`scales` (={self.scales!r}) must be a non-empty tuple of positive factors")
        if not self.angles_deg:
            raise JaxinterpError("`angles_deg` must be non-empty; use (0.0,) for no rotation")
        if not math.isfinite(self.magnitude) or self.magnitude < 0:
            raise JaxinterpError(
                f"`magnitude` (={self.magnitude!r}) must be a finite number >= 0; 0 is the identity"
            )


def standard_transforms() -> Transform:
    """The default robustness chain for 64×64 frames: pad 16, jitter 16, scale, rotate ±5°, jitter 8."""
    return Transform()


def no_transforms() -> Transform:
    """A spec whose `apply` returns the images unchanged: for ablations and the identity check."""
    return Transform(pad=0, jitters=(), scales=(1.0,), angles_deg=(0.0,))


def _translation(dy: jax.Array, dx: jax.Array) -> jax.Array:
    """Homogeneous 3×3 matrix adding (dy, dx) to (row, col)."""
    one, zero = jnp.ones_like(dy), jnp.zeros_like(dy)
    return jnp.stack([jnp.stack([one, zero, dy]), jnp.stack([zero, one, dx]), jnp.stack([zero, zero, one])])


def _scaling(s: jax.Array) -> jax.Array:
    """Homogeneous 3×3 matrix multiplying (row, col) by s about the origin."""
    one, zero = jnp.ones_like(s), jnp.zeros_like(s)
    return jnp.stack([jnp.stack([s, zero, zero]), jnp.stack([zero, s, zero]), jnp.stack([zero, zero, one])])


def _rotation(theta: jax.Array) -> jax.Array:
    """Homogeneous 3×3 matrix rotating (row, col) by theta: counter-clockwise on screen, where rows go down."""
    c, s = jnp.cos(theta), jnp.sin(theta)
    one, zero = jnp.ones_like(theta), jnp.zeros_like(theta)
    return jnp.stack([jnp.stack([c, -s, zero]), jnp.stack([s, c, zero]), jnp.stack([zero, zero, one])])


@functools.partial(jax.jit, static_argnames=("spec", "size"))
def sample_matrix(
    key: jax.Array,
    spec: Transform,
    size: int | tuple[int, int],
    *,
    magnitude: float | jax.Array | None = None,
) -> jax.Array:
    """Draw one transform: a 3×3 matrix taking output (row, col, 1) to the source coordinates to sample.

    `magnitude` (traceable, clipped to [0, 1]) scales `spec.magnitude`, e.g. a schedule annealing the
    transforms; set `spec.magnitude` for stronger ones.
    """
    h, w = (size, size) if isinstance(size, int) else size
    m = jnp.float32(spec.magnitude)
    if magnitude is not None:
        m = m * jnp.clip(jnp.asarray(magnitude, jnp.float32), 0.0, 1.0)
    # One draw of random bits for every choice: a bit-mix compiles ~3× faster than split + randint per draw,
    # and the modulo bias (n / 2³²) is negligible for these few options.
    counts = [len(spec.scales), len(spec.angles_deg)] + [d + 1 for d in spec.jitters for _ in "yx"]
    picks = jax.random.bits(key, (len(counts),), jnp.uint32) % jnp.asarray(counts, jnp.uint32)
    scale = jnp.asarray(spec.scales, jnp.float32)[picks[0]] ** m
    angle = jnp.asarray(spec.angles_deg, jnp.float32)[picks[1]] * (math.pi / 180.0) * m
    # jitter(d) is a random crop d px smaller: a content shift uniform over the integers in [-d//2, d - d//2].
    offsets = jnp.asarray([d // 2 for d in spec.jitters for _ in "yx"], jnp.float32)
    shifts = ((picks[2:].astype(jnp.float32) - offsets) * m).reshape(-1, 2)
    zero = jnp.zeros(2, jnp.float32)
    before = shifts[0] if spec.jitters else zero
    after = jnp.sum(shifts[1:], axis=0)  # translations commute, so later jitters add up
    cy, cx = jnp.float32((h - 1) / 2), jnp.float32((w - 1) / 2)
    # Content moves by C · J_after · R · S · J_before · C⁻¹ (C: origin at the image centre); sampling needs its
    # inverse, built from the factors' exact inverses so zero magnitude gives exactly the identity.
    return (
        _translation(cy, cx)
        @ _translation(-before[0], -before[1])
        @ _scaling(1.0 / scale)
        @ _rotation(-angle)
        @ _translation(-after[0], -after[1])
        @ _translation(-cy, -cx)
    )


def max_zoom(spec: Transform) -> float:
    """Bound on s·(|cos θ| + |sin θ|) over the spec's draws: how many output pixels one source pixel spans."""
    m = spec.magnitude  # call-time magnitudes are clipped to [0, 1], so draws lie between identity and this
    zoom = max(1.0, *(s**m for s in spec.scales))
    turn = min(math.pi / 4, max(abs(a) * m * math.pi / 180.0 for a in spec.angles_deg))
    return zoom * (math.cos(turn) + math.sin(turn))


def _canvas(image: jax.Array, pad: int, pad_mode: str, pad_value: jax.Array) -> tuple[jax.Array, int]:
    """The padded image that samples are read from, and its margin; samples past it repeat its edge."""
    margin = 0
    if pad_mode == "reflect" and pad > 0:
        image, margin = jnp.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect"), pad
    # One more ring, so the 2×2 neighbourhood of any clamped sample is in bounds: the fill colour (everything
    # past the image is fill, so one ring is enough) or, for reflect and pad=0, a copy of the edge.
    ring = ((1, 1), (1, 1), (0, 0))
    if pad_mode == "constant" and pad > 0:
        return jnp.pad(image, ring, constant_values=pad_value.astype(image.dtype)), margin + 1
    return jnp.pad(image, ring, mode="edge"), margin + 1


def _grid(h: int, w: int) -> tuple[jax.Array, jax.Array]:
    """Row and column coordinates of every pixel centre, (h, w) each."""
    return jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij")


def _sample_points(
    matrix: jax.Array, rows: jax.Array, cols: jax.Array, shape: tuple[int, int], margin: int
) -> tuple[jax.Array, jax.Array]:
    """Source coordinates `matrix` @ (row, col, 1), clamped to the canvas: `margin` px around an (h, w) image."""
    sy = matrix[0, 0] * rows + matrix[0, 1] * cols + matrix[0, 2]
    sx = matrix[1, 0] * rows + matrix[1, 1] * cols + matrix[1, 2]
    return jnp.clip(sy, -margin, shape[0] - 1 + margin), jnp.clip(sx, -margin, shape[1] - 1 + margin)


def _warp(image: jax.Array, matrix: jax.Array, pad: int, pad_mode: str, pad_value: jax.Array) -> jax.Array:
    """The forward resample: a bilinear read of 4 corners from the padded canvas (one fused gather)."""
    h, w, c = image.shape
    canvas, margin = _canvas(image, pad, pad_mode, pad_value)
    # Clamping the coordinates (not the indices) keeps the weights exact: a sample on the canvas's last row
    # gets the floor index one row in, with fraction 1.
    sy, sx = _sample_points(matrix, *_grid(h, w), (h, w), margin)
    y0 = jnp.clip(jnp.floor(sy), -margin, h - 2 + margin)
    x0 = jnp.clip(jnp.floor(sx), -margin, w - 2 + margin)
    fy, fx = (sy - y0)[..., None], (sx - x0)[..., None]
    stride = w + 2 * margin
    top_left = (y0.astype(jnp.int32) + margin) * stride + x0.astype(jnp.int32) + margin
    flat = canvas.reshape(-1, c)

    def corner(offset: int) -> jax.Array:
        # Separate per-corner reads fuse into one loop; a stacked (4, h, w) index array ran 2× slower.
        return flat.at[top_left + offset].get(mode="promise_in_bounds")

    top = corner(0) * (1 - fx) + corner(1) * fx
    bottom = corner(stride) * (1 - fx) + corner(stride + 1) * fx
    return top * (1 - fy) + bottom * fy


def _gather_adjoint(g: jax.Array, matrix: jax.Array, reach: int) -> jax.Array:
    """Aᵀg for one image as a gather: each source pixel sums the outputs whose samples fall within 1 px of it.

    A source pixel p only receives from outputs o with |A o - p|∞ < 1, i.e. within the |A⁻¹| row sums
    (s·(|cos θ| + |sin θ|), at most `max_zoom`) of A⁻¹p; rounding A⁻¹p adds 0.5, so with
    `reach` ≥ max_zoom - 0.5 (plus slack for float error) the (2 reach + 1)² reads find them all.
    """
    h, w, c = g.shape
    rows, cols = _grid(h, w)
    (a, b), (d, e) = matrix[0, :2], matrix[1, :2]
    det = a * e - b * d
    ty, tx = rows - matrix[0, 2], cols - matrix[1, 2]
    qy, qx = jnp.round((e * ty - b * tx) / det), jnp.round((a * tx - d * ty) / det)  # A⁻¹p, rounded
    flat = g.reshape(-1, c)
    grad = jnp.zeros_like(g)
    # One read per offset: XLA fuses these into one loop; a stacked (k, k, h, w) gather ran ~10× slower.
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            oy, ox = qy + dy, qx + dx
            sy, sx = _sample_points(matrix, oy, ox, (h, w), 1)  # the forward's clamp
            weight = jnp.maximum(0.0, 1 - jnp.abs(sy - rows)) * jnp.maximum(0.0, 1 - jnp.abs(sx - cols))
            weight = jnp.where((oy >= 0) & (oy <= h - 1) & (ox >= 0) & (ox <= w - 1), weight, 0.0)
            index = (jnp.clip(oy, 0, h - 1) * w + jnp.clip(ox, 0, w - 1)).astype(jnp.int32)
            grad = grad + weight[..., None] * flat.at[index].get(mode="promise_in_bounds")
    return grad


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _warp_fill(image: jax.Array, matrix: jax.Array, pad_value: jax.Array, reach: int) -> jax.Array:
    """`_warp` with constant padding, for matrices whose footprint is within `reach`; gradient by gather."""
    return _warp(image, matrix, 1, "constant", pad_value)


def _warp_fill_fwd(image, matrix, pad_value, reach):
    """Forward pass; the matrix is all the backward pass needs (the warp is linear in the image)."""
    return _warp_fill(image, matrix, pad_value, reach), matrix


def _warp_fill_bwd(reach, matrix, g):
    """Input gradient by `_gather_adjoint`; the fill and the matrix get none (a constant and a random draw).

    XLA's own transpose of the forward gather is a scatter-add, which runs serially on CPU: ~7× the forward
    pass, against ~2× for the gather. The gather reads `g` (2 reach + 1)² times, so it relies on `g` being
    materialized, as a network's input gradient is; XLA fuses a cheap elementwise producer (input scaling)
    into the reads harmlessly, but a nonlinearity of the warped image itself, fused in, would be recomputed
    per read (measured 3× slower than the scatter for `tanh(apply(...))` fed straight to the loss).
    """
    return _gather_adjoint(g, matrix, reach), jnp.zeros_like(matrix), jnp.zeros((), jnp.float32)


_warp_fill.defvjp(_warp_fill_fwd, _warp_fill_bwd)


@functools.partial(jax.jit, static_argnames=("pad", "pad_mode"))
def resample(
    image: jax.Array,
    matrix: jax.Array,
    *,
    pad: int = 0,
    pad_mode: PadMode = "constant",
    pad_value: float = DEFAULT_PAD_VALUE,
) -> jax.Array:
    """Bilinearly sample one image (h, w, c) at `matrix` @ (row, col, 1) of each output pixel: one gather.

    Exact for any matrix, differentiated by XLA; `apply` uses the faster gradient its bounded draws allow.
    """
    return _warp(image, matrix, pad, pad_mode, jnp.asarray(pad_value, jnp.float32)).astype(image.dtype)


@functools.partial(jax.jit, static_argnames=("spec",))
def apply(
    key: jax.Array,
    images: jax.Array,
    spec: Transform,
    *,
    magnitude: float | jax.Array | None = None,
) -> jax.Array:
    """Transform a batch (b, h, w, c), each image with its own key split from `key`; output keeps the shape.

    Jitted with `spec` static; vmap it freely (e.g. over facet keys). With constant padding its input
    gradient is a gather, ~5× faster on CPU than XLA's scatter-add (see `_warp_fill_bwd`).
    """
    if images.ndim != 4:
        raise JaxinterpError(f"`images` must be (batch, h, w, channels), got shape {images.shape}")
    b, h, w, _ = images.shape
    keys = jax.random.split(key, b)
    matrices = jax.vmap(lambda k: sample_matrix(k, spec, (h, w), magnitude=magnitude))(keys)
    pad_value = jnp.float32(spec.pad_value)
    # Every draw's footprint is within max_zoom(spec) (magnitudes are clipped to [0, 1]), so the gather
    # adjoint is exact for it; a wider footprint would need more reads than XLA's scatter-add costs.
    reach = max(1, math.ceil(max_zoom(spec) - 0.5 + _REACH_SLACK))
    if spec.pad_mode == "constant" and spec.pad > 0 and reach <= MAX_GATHER_REACH:
        warp = functools.partial(_warp_fill, pad_value=pad_value, reach=reach)
    else:
        warp = functools.partial(_warp, pad=spec.pad, pad_mode=spec.pad_mode, pad_value=pad_value)
    return jax.vmap(warp)(images, matrices).astype(images.dtype)
