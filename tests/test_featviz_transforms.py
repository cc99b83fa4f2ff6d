"""Tests for the fused random affine transforms (tiny shapes, CPU)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp.errors import JaxinterpError
from jaxinterp.featviz import transforms as tf

SIZE = 16


def _images(b=3, h=SIZE, w=SIZE, seed=0):
    """Random float images in [0, 1]."""
    return jax.random.uniform(jax.random.key(seed), (b, h, w, 3))


def _spec(**kw):
    """A spec with every random draw switched off, overridden by `kw`."""
    return dataclasses.replace(tf.no_transforms(), **kw)


def test_no_transforms_and_zero_magnitude_are_exact_identity():
    images = _images()
    key = jax.random.key(1)
    np.testing.assert_array_equal(np.asarray(tf.apply(key, images, tf.no_transforms())), np.asarray(images))
    # Magnitude 0, traced as an annealing schedule would pass it, turns every standard draw into the identity.
    spec = tf.standard_transforms()
    np.testing.assert_array_equal(np.asarray(tf.apply(key, images, spec, magnitude=0.0)), np.asarray(images))
    np.testing.assert_array_equal(np.asarray(tf.sample_matrix(key, spec, SIZE, magnitude=0.0)), np.eye(3))
    half = np.asarray(tf.sample_matrix(key, spec, SIZE, magnitude=0.5))
    full = np.asarray(tf.sample_matrix(key, spec, SIZE))
    assert not np.allclose(half, full) and not np.allclose(half, np.eye(3))
    # Call-time magnitudes are clipped to [0, 1], so draws never exceed the spec (the gradient relies on it).
    np.testing.assert_array_equal(np.asarray(tf.sample_matrix(key, spec, SIZE, magnitude=3.0)), full)


@pytest.mark.parametrize("spec", [tf.standard_transforms(), _spec(pad=4, pad_mode="reflect", jitters=(3,))])
def test_shapes_and_dtype_kept(spec):
    images = _images(2, SIZE, SIZE + 4)
    out = tf.apply(jax.random.key(0), images, spec)
    assert out.shape == images.shape and out.dtype == images.dtype


def test_integer_translation_is_a_shift_on_the_interior():
    images = _images()
    spec = _spec(pad=2, jitters=(6,))
    key = jax.random.key(3)
    matrix = np.asarray(tf.sample_matrix(jax.random.split(key, 3)[1], spec, SIZE))
    dy, dx = -matrix[:2, 2].astype(int)  # content moves by minus the sampling offset
    assert (dy, dx) != (0, 0)  # this key really shifts
    np.testing.assert_array_equal(matrix[:2, :2], np.eye(2))
    out = np.asarray(tf.apply(key, images, spec))[1]
    rolled = np.roll(np.asarray(images[1]), (dy, dx), axis=(0, 1))
    inner = np.s_[max(dy, 0) : SIZE + min(dy, 0), max(dx, 0) : SIZE + min(dx, 0)]
    np.testing.assert_allclose(out[inner], rolled[inner], atol=1e-6)
    # Outside the interior the constant padding shows, as lucid's pad-then-crop does.
    border = np.ones((SIZE, SIZE), bool)
    border[inner] = False
    if border.any():
        np.testing.assert_allclose(out[border], 0.5, atol=1e-6)


def test_reflect_padding_mirrors_without_repeating_the_edge():
    row = jnp.arange(6.0)[None, :, None]  # one row, columns 0..5
    shift = jnp.asarray([[1.0, 0, 0], [0, 1, -2], [0, 0, 1]])
    out = tf.resample(row, shift, pad=4, pad_mode="reflect")
    np.testing.assert_allclose(np.asarray(out[0, :, 0]), [2, 1, 0, 1, 2, 3])


def test_translation_matches_a_plain_numpy_reference_with_subpixel_shift():
    image = np.asarray(_images(1)[0])
    matrix = np.array([[1.0, 0, 0.25], [0, 1, -0.5], [0, 0, 1]], np.float32)
    out = np.asarray(tf.resample(jnp.asarray(image), jnp.asarray(matrix), pad=1))
    padded = np.pad(image, ((1, 2), (1, 2), (0, 0)), constant_values=0.5)  # indices shifted by 1
    ys, xs = np.meshgrid(np.arange(SIZE) + 0.25 + 1, np.arange(SIZE) - 0.5 + 1, indexing="ij")
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    fy, fx = (ys - y0)[..., None], (xs - x0)[..., None]
    ref = (
        (1 - fy) * (1 - fx) * padded[y0, x0]
        + (1 - fy) * fx * padded[y0, x0 + 1]
        + fy * (1 - fx) * padded[y0 + 1, x0]
        + fy * fx * padded[y0 + 1, x0 + 1]
    )
    np.testing.assert_allclose(out, ref, atol=1e-6)


def test_rotation_direction_and_scale_about_the_centre():
    images = _images(1)
    rot = tf.apply(jax.random.key(0), images, _spec(angles_deg=(90.0,)))
    np.testing.assert_allclose(np.asarray(rot), np.rot90(np.asarray(images), k=1, axes=(1, 2)), atol=1e-4)
    # A 2× zoom keeps the centre where it was: the four central source pixels stay at the centre.
    zoom = np.asarray(tf.apply(jax.random.key(0), images, _spec(scales=(2.0,))))[0]
    c = SIZE // 2
    np.testing.assert_allclose(zoom[c - 1 : c + 1, c - 1 : c + 1].mean((0, 1)), np.asarray(images[0, c - 1 : c + 1, c - 1 : c + 1]).mean((0, 1)), atol=1e-6)  # fmt: skip


def test_deterministic_from_key_and_keys_differ_per_image():
    images = jnp.broadcast_to(_images(1), (4, SIZE, SIZE, 3))
    spec = tf.standard_transforms()
    a = np.asarray(tf.apply(jax.random.key(5), images, spec))
    np.testing.assert_array_equal(a, np.asarray(tf.apply(jax.random.key(5), images, spec)))
    assert not np.allclose(a, np.asarray(tf.apply(jax.random.key(6), images, spec)))
    assert not np.allclose(a[0], a[1])  # identical inputs, independent per-image draws


def test_batched_jit_and_vmap_match_the_per_image_reference():
    images = _images()
    spec = tf.standard_transforms()
    key = jax.random.key(7)
    keys = jax.random.split(key, images.shape[0])
    ref = np.stack(
        [
            tf.resample(images[i], tf.sample_matrix(keys[i], spec, SIZE), pad=spec.pad)
            for i in range(len(keys))
        ]
    )
    batched = np.asarray(tf.apply(key, images, spec))  # `apply` is jitted (spec static)
    np.testing.assert_allclose(batched, ref, atol=1e-6)
    # vmapped over keys: many independent augmentations of one batch at once.
    outer = jax.random.split(key, 2)
    many = jax.vmap(lambda k: tf.apply(k, images, spec))(outer)
    assert many.shape == (2, *images.shape)
    np.testing.assert_allclose(np.asarray(many[1]), np.asarray(tf.apply(outer[1], images, spec)), atol=1e-6)


def test_padding_shows_at_the_borders_of_standard_views():
    images = jnp.zeros((8, SIZE, SIZE, 3))
    out = np.asarray(tf.apply(jax.random.key(8), images, tf.standard_transforms()))
    assert (out == 0).any() and np.isclose(out, 0.5).any()  # content and grey padding both visible
    assert np.all((out >= 0) & (out <= 0.5 + 1e-6))  # bilinear mixing never leaves the inputs' range


def test_gradients_flow_to_the_input_as_the_adjoint_of_the_warp():
    images, probe = _images(seed=1), _images(seed=2)
    spec = _spec(pad=2, jitters=(4, 2), scales=(0.9, 1.1), angles_deg=(-5.0, 5.0))
    key = jax.random.key(9)
    grad = jax.grad(lambda x: jnp.sum(tf.apply(key, x, spec) * probe))(images)
    grad = np.asarray(grad)
    assert np.isfinite(grad).all() and (grad != 0).mean() > 0.5
    # The warp is affine, out = A x + fill, so its input gradient is Aᵀ probe: <Aᵀ p, x> = <p, A x>.
    fill = tf.apply(key, jnp.zeros_like(images), spec)
    lhs, rhs = np.sum(grad * images), np.sum(probe * (tf.apply(key, images, spec) - fill))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-4)


@pytest.mark.parametrize(
    "spec",
    [
        tf.standard_transforms(),  # the gather adjoint reading 3×3 neighbours
        _spec(pad=1, jitters=(40,), scales=(0.5, 1.05)),  # samples far past the padding, clamped
        _spec(pad=1, scales=(1.6,), angles_deg=(-20.0, 20.0)),  # a wider footprint: 5×5 neighbours
        _spec(pad=1, scales=(3.0,)),  # wider than MAX_GATHER_REACH: XLA's scatter-add
    ],
)
def test_apply_gradient_matches_autodiff_of_the_plain_resample(spec):
    images, probe = _images(seed=3), _images(seed=4)
    key = jax.random.key(10)
    matrices = jax.vmap(lambda k: tf.sample_matrix(k, spec, SIZE))(jax.random.split(key, len(images)))
    plain = jax.vmap(lambda x, m: tf.resample(x, m, pad=spec.pad))
    ref = jax.grad(lambda x: jnp.sum(probe * plain(x, matrices)))(images)
    fast = jax.grad(lambda x: jnp.sum(probe * tf.apply(key, x, spec)))(images)
    np.testing.assert_allclose(np.asarray(fast), np.asarray(ref), atol=1e-5)


def test_max_zoom_bounds_the_draws():
    assert tf.max_zoom(tf.no_transforms()) == 1.0
    np.testing.assert_allclose(tf.max_zoom(_spec(scales=(0.5, 2.0), angles_deg=(90.0,))), 2 * np.sqrt(2))
    standard = tf.max_zoom(tf.standard_transforms())
    np.testing.assert_allclose(standard, 1.05 * (np.cos(np.pi / 36) + np.sin(np.pi / 36)))


def test_bad_specs_raise_helpful_errors():
    with pytest.raises(JaxinterpError, match="pad_mode"):
        tf.Transform(pad_mode="wrap")
    with pytest.raises(JaxinterpError, match="scales"):
        tf.Transform(scales=(0.0,))
    with pytest.raises(JaxinterpError, match="jitters"):
        tf.Transform(jitters=(-1,))
    with pytest.raises(JaxinterpError, match="magnitude"):
        tf.Transform(magnitude=-1.0)
    with pytest.raises(JaxinterpError, match="batch"):
        tf.apply(jax.random.key(0), jnp.zeros((SIZE, SIZE, 3)), tf.standard_transforms())
    assert hash(tf.Transform(jitters=[4, 2])) == hash(tf.Transform(jitters=(4, 2)))  # lists coerced
