"""Image parameterizations for feature visualization: pixel or Fourier basis, colour decorrelation, sigmoid.

Each is a pure `ImageParam(init, apply, from_images)` over an explicit params pytree, so the optimizer engine
can jit, vmap and differentiate it; the colour statistics of an agent's frames are fitted and saved here too.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.atomic import write_json
from jaxinterp.errors import JaxinterpError

__all__ = [
    "COLOR_STATS_FORMAT",
    "DEFAULT_DECAY_POWER",
    "DEFAULT_SD",
    "DEFAULT_SIZE",
    "FFT_OUTPUT_DIVISOR",
    "IMAGENET_COLOR_CORRELATION",
    "ColorStats",
    "ImageParam",
    "colors_to_rgb",
    "fft",
    "fft_from_image",
    "fit_color_decorrelation",
    "fit_color_stats",
    "image",
    "load_color_stats",
    "normalized_color_matrix",
    "pixel",
    "save_color_stats",
    "spectrum_scale",
    "valid_rgb",
    "whiten",
]

Params = Any  # a pytree of float32 arrays; its layout belongs to the factory that made it
Size = int | tuple[int, int]

DEFAULT_SIZE = 64
"""Procgen renders 64×64 RGB frames, the agent CNN's only input size."""

DEFAULT_SD = 0.01
"""lucid's init noise: small, so a fresh image is mid-grey (sigmoid(0) = 0.5) with faint texture."""

DEFAULT_DECAY_POWER = 1.0
"""Amplitude ~ 1/f^1, the spectrum of natural images: a unit step then changes every octave equally, which
damps the high-frequency noise that pixel-space gradient ascent produces (lucid's and lucent's default)."""

FFT_OUTPUT_DIVISOR = 4.0
"""lucid's empirical divisor on the inverse FFT (its source calls it magic); kept so lucid learning rates
(~0.05 with Adam) transfer and pre-sigmoid values stay in the sigmoid's responsive range."""

IMAGENET_COLOR_CORRELATION = np.asarray(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=np.float32
)
"""lucid's `color_correlation_svd_sqrt`: a square root of ImageNet's RGB covariance, for comparison with a fit."""

LOGIT_EPS = 1e-4
"""`from_images` clips pixels to [eps, 1 - eps] before the logit, which is infinite at 0 and 1."""

EIGENVALUE_FLOOR = 1e-10
"""Relative floor on covariance eigenvalues, so flat-coloured frames still give an invertible matrix."""

COLOR_STATS_FORMAT = "jaxinterp.color_stats/1"
"""Tag written into colour-statistics files, checked on load."""

_STATS_CHUNK_PIXELS = 1 << 20  # bounds the float64 copy when fitting over many frames


class ImageParam(NamedTuple):
    """A pure image parameterization: `init` draws params, `apply` renders them, `from_images` inverts `apply`."""

    init: Callable[[jax.Array, int], Params]
    """`init(key, batch) -> params`: `batch` independent images (facets) from one key."""
    apply: Callable[[Params], jax.Array]
    """`apply(params) -> (batch, h, w, 3) float32`; in [0, 1] once wrapped by `valid_rgb`."""
    from_images: Callable[[jax.Array], Params]
    """`from_images(images) -> params` with `apply(params) ≈ images`: start from a real frame."""


def _hw(size: Size) -> tuple[int, int]:
    """Return (height, width) from an int or a pair, rejecting non-positive sizes."""
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h < 1 or w < 1:
        raise JaxinterpError(f"image size must be positive, got {size!r}; Procgen frames are 64")
    return int(h), int(w)


def _check_batch(batch: int) -> None:
    """Reject a batch that is not a positive Python int (it fixes array shapes, so it cannot be traced)."""
    if not isinstance(batch, int) or batch < 1:
        raise JaxinterpError(f"`batch` (={batch!r}) must be a positive int: the number of images to optimize")


def pixel(size: Size = DEFAULT_SIZE, sd: float = DEFAULT_SD, channels: int = 3) -> ImageParam:
    """Unconstrained per-pixel values: the naive basis, kept as the baseline the FFT basis is compared with."""
    h, w = _hw(size)

    def init(key: jax.Array, batch: int) -> Params:
        _check_batch(batch)
        return {"pixels": sd * jax.random.normal(key, (batch, h, w, channels), jnp.float32)}

    def apply(params: Params) -> jax.Array:
        return params["pixels"]

    def from_images(images: jax.Array) -> Params:
        return {"pixels": jnp.asarray(images, jnp.float32)}

    return ImageParam(init, apply, from_images)


def spectrum_scale(size: Size, decay_power: float = DEFAULT_DECAY_POWER) -> np.ndarray:
    """Per-frequency gain (h, w // 2 + 1): lucid's 1/max(f, 1/size)^decay times sqrt(h*w) for a unitary FFT."""
    h, w = _hw(size)
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    freqs = np.sqrt(fx * fx + fy * fy)
    # The floor at 1/size keeps the DC term finite; sqrt(h*w) undoes irfft2's 1/(h*w), so the map is unitary
    # and pixel-scale learning rates carry over.
    scale = 1.0 / np.maximum(freqs, 1.0 / max(h, w)) ** decay_power
    return (scale * np.sqrt(h * w)).astype(np.float32)


def fft(
    size: Size = DEFAULT_SIZE,
    sd: float = DEFAULT_SD,
    decay_power: float = DEFAULT_DECAY_POWER,
    channels: int = 3,
) -> ImageParam:
    """Learnable real/imag `rfft2` spectrum scaled by `spectrum_scale`: gradient steps favour low frequencies."""
    h, w = _hw(size)
    scale = jnp.asarray(spectrum_scale((h, w), decay_power))[None, :, :, None]

    def init(key: jax.Array, batch: int) -> Params:
        _check_batch(batch)
        k_real, k_imag = jax.random.split(key)
        shape = (batch, h, w // 2 + 1, channels)
        return {
            "real": sd * jax.random.normal(k_real, shape, jnp.float32),
            "imag": sd * jax.random.normal(k_imag, shape, jnp.float32),
        }

    def apply(params: Params) -> jax.Array:
        spectrum = jax.lax.complex(params["real"], params["imag"]) * scale
        images = jnp.fft.irfft2(spectrum, s=(h, w), axes=(1, 2))
        return (images / FFT_OUTPUT_DIVISOR).astype(jnp.float32)

    def from_images(images: jax.Array) -> Params:
        return fft_from_image(images, decay_power)

    return ImageParam(init, apply, from_images)


def fft_from_image(images: jax.Array, decay_power: float = DEFAULT_DECAY_POWER) -> Params:
    """Spectrum params that `fft(...).apply` maps back to `images` (b, h, w, c): the inverse of the scaling."""
    images = jnp.asarray(images, jnp.float32)
    if images.ndim != 4:
        raise JaxinterpError(f"`images` must be (batch, h, w, channels), got shape {images.shape}")
    scale = jnp.asarray(spectrum_scale(images.shape[1:3], decay_power))[None, :, :, None]
    spectrum = jnp.fft.rfft2(images * FFT_OUTPUT_DIVISOR, axes=(1, 2)) / scale
    return {"real": spectrum.real.astype(jnp.float32), "imag": spectrum.imag.astype(jnp.float32)}


def normalized_color_matrix(matrix: np.ndarray) -> np.ndarray:
    """Scale a colour square-root matrix so its largest column has unit norm (lucid's normalization)."""
    matrix = np.asarray(matrix, np.float64)
    if matrix.shape != (3, 3):
        raise JaxinterpError(f"colour matrix must be 3×3, got shape {matrix.shape}")
    return (matrix / np.max(np.linalg.norm(matrix, axis=0))).astype(np.float32)


def colors_to_rgb(t: jax.Array, matrix: np.ndarray) -> jax.Array:
    """Map (..., 3) values from the decorrelated colour space to RGB: `t @ normalized(matrix).T` per pixel."""
    return t @ jnp.asarray(normalized_color_matrix(matrix)).T


def valid_rgb(
    param: ImageParam, *, decorrelate: np.ndarray | None = IMAGENET_COLOR_CORRELATION
) -> ImageParam:
    """Wrap a basis so its values are decorrelated colours (if a matrix is given), then sigmoid into [0, 1]."""
    to_rgb = from_rgb = None
    if decorrelate is not None:
        matrix = normalized_color_matrix(decorrelate).astype(np.float64)
        if abs(np.linalg.det(matrix)) < 1e-12:
            raise JaxinterpError(
                "colour matrix is singular (it collapses colours); refit it on more varied frames or pass None"
            )
        to_rgb = jnp.asarray(matrix, jnp.float32)
        from_rgb = jnp.asarray(np.linalg.inv(matrix), jnp.float32)

    def apply(params: Params) -> jax.Array:
        t = param.apply(params)
        if to_rgb is not None:
            t = t @ to_rgb.T
        return jax.nn.sigmoid(t)

    def from_images(images: jax.Array) -> Params:
        x = jnp.clip(jnp.asarray(images, jnp.float32), LOGIT_EPS, 1.0 - LOGIT_EPS)
        t = jnp.log(x) - jnp.log1p(-x)
        if from_rgb is not None:
            t = t @ from_rgb.T
        return param.from_images(t)

    return ImageParam(param.init, apply, from_images)


def image(
    size: Size = DEFAULT_SIZE,
    *,
    basis: Literal["fft", "pixel"] = "fft",
    decorrelate: np.ndarray | None = IMAGENET_COLOR_CORRELATION,
    sd: float = DEFAULT_SD,
    decay_power: float = DEFAULT_DECAY_POWER,
) -> ImageParam:
    """The usual feature-vis image: an FFT (or pixel) basis in decorrelated colour, squashed into [0, 1]."""
    if basis == "fft":
        inner = fft(size, sd=sd, decay_power=decay_power)
    elif basis == "pixel":
        inner = pixel(size, sd=sd)
    else:
        raise JaxinterpError(f"`basis` (={basis!r}) must be 'fft' or 'pixel'")
    return valid_rgb(inner, decorrelate=decorrelate)


class ColorStats(NamedTuple):
    """RGB statistics of an agent's frames, pixels scaled to [0, 1]."""

    matrix: np.ndarray
    """(3, 3) float32 symmetric square root of the pixel covariance: `matrix @ matrix = cov`."""
    mean: np.ndarray
    """(3,) float32 mean pixel colour."""


def _unit_pixels(frames: np.ndarray) -> np.ndarray:
    """View frames (..., 3) as (n, 3) pixels; uint8 stays uint8 (scaled later), floats must be in [0, 1]."""
    frames = np.asarray(frames)
    if frames.shape[-1:] != (3,):
        raise JaxinterpError(f"frames must end in 3 RGB channels (NHWC), got shape {frames.shape}")
    return frames.reshape(-1, 3)


def fit_color_stats(frames: np.ndarray) -> ColorStats:
    """Fit the RGB mean and covariance square root of frames (..., 3), uint8 or float in [0, 1]."""
    pixels = _unit_pixels(frames)
    n = pixels.shape[0]
    if n < 2:
        raise JaxinterpError(f"need at least 2 pixels to fit colour statistics, got {n}")
    unit = 1.0 / 255.0 if pixels.dtype == np.uint8 else 1.0
    # Pixels vary little around the mean, so shift by a rough mean first: the one-pass sums then stay accurate.
    shift = pixels[:: max(1, n // 4096)].astype(np.float64).mean(axis=0) * unit
    total = np.zeros(3)
    outer = np.zeros((3, 3))
    for start in range(0, n, _STATS_CHUNK_PIXELS):
        x = pixels[start : start + _STATS_CHUNK_PIXELS].astype(np.float64) * unit - shift
        total += x.sum(axis=0)
        outer += x.T @ x
    centred_mean = total / n
    cov = (outer - n * np.outer(centred_mean, centred_mean)) / (n - 1)  # sample covariance, as np.cov
    eigvals, eigvecs = np.linalg.eigh(cov)
    eigvals = np.maximum(eigvals, EIGENVALUE_FLOOR * max(eigvals.max(), EIGENVALUE_FLOOR))
    matrix = (eigvecs * np.sqrt(eigvals)) @ eigvecs.T
    return ColorStats(matrix.astype(np.float32), (centred_mean + shift).astype(np.float32))


def fit_color_decorrelation(frames: np.ndarray) -> np.ndarray:
    """The (3, 3) symmetric square root U diag(sqrt λ) Uᵀ of the frames' RGB covariance: its inverse whitens."""
    return fit_color_stats(frames).matrix


def whiten(pixels: np.ndarray, stats: ColorStats) -> np.ndarray:
    """Centre pixels (..., 3) and apply the inverse colour square root: identity covariance over the fit sample."""
    pixels = np.asarray(pixels)
    x = pixels.astype(np.float64) / (255.0 if pixels.dtype == np.uint8 else 1.0)
    inverse = np.linalg.inv(np.asarray(stats.matrix, np.float64))
    return (x - np.asarray(stats.mean, np.float64)) @ inverse.T


def save_color_stats(path: str | Path, matrix: np.ndarray, mean: np.ndarray) -> None:
    """Write colour statistics as a small JSON file, e.g. next to the agent weights it was fitted for."""
    matrix, mean = np.asarray(matrix, np.float64), np.asarray(mean, np.float64)
    if matrix.shape != (3, 3) or mean.shape != (3,):
        raise JaxinterpError(
            f"expected a 3×3 matrix and a 3-vector mean, got {matrix.shape} and {mean.shape}"
        )
    payload = {"format": COLOR_STATS_FORMAT, "matrix": matrix.tolist(), "mean": mean.tolist()}
    write_json(path, payload)


def load_color_stats(path: str | Path) -> ColorStats:
    """Read colour statistics written by `save_color_stats`."""
    try:
        payload = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise JaxinterpError(f"cannot read colour statistics from {path}: {err}") from err
    if not isinstance(payload, dict) or payload.get("format") != COLOR_STATS_FORMAT:
        raise JaxinterpError(
            f"{path} is not a {COLOR_STATS_FORMAT} file; write one with `save_color_stats` from fitted frames"
        )
    matrix = np.asarray(payload.get("matrix"), np.float32)
    mean = np.asarray(payload.get("mean"), np.float32)
    if matrix.shape != (3, 3) or mean.shape != (3,):
        raise JaxinterpError(
            f"{path}: expected a 3×3 matrix and a 3-vector mean, got {matrix.shape}, {mean.shape}"
        )
    return ColorStats(matrix, mean)
