"""Tests for image parameterizations and colour statistics (tiny shapes, CPU)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp.errors import JaxinterpError
from jaxinterp.featviz import param

SIZE = 16  # small, but even and big enough for several frequency octaves
BATCH = 2  # two facets: enough to see they differ; one batch size keeps compiled shapes shared


def _all_params():
    """Every factory combination at the test size, by a readable name."""
    return {
        "pixel": param.pixel(SIZE),
        "fft": param.fft(SIZE),
        "fft_odd": param.fft((SIZE - 1, SIZE + 1)),
        "image_fft": param.image(SIZE),
        "image_pixel": param.image(SIZE, basis="pixel"),
        "image_fft_plain": param.image(SIZE, decorrelate=None),
    }


@pytest.mark.parametrize("name", list(_all_params()))
def test_shapes_dtype_and_determinism(name):
    p = _all_params()[name]
    key = jax.random.key(0)
    params = p.init(key, BATCH)
    images = p.apply(params)
    h, w = (SIZE - 1, SIZE + 1) if name == "fft_odd" else (SIZE, SIZE)
    assert images.shape == (BATCH, h, w, 3) and images.dtype == jnp.float32
    again = p.apply(p.init(key, BATCH))
    np.testing.assert_array_equal(np.asarray(images), np.asarray(again))
    other = p.apply(p.init(jax.random.key(1), BATCH))
    assert not np.allclose(np.asarray(images), np.asarray(other))
    # The K facets of one init are independent draws, not copies.
    assert not np.allclose(np.asarray(images[0]), np.asarray(images[1]))


@pytest.mark.parametrize("name", ["image_fft", "image_pixel", "image_fft_plain"])
def test_valid_rgb_in_unit_range_even_for_large_params(name):
    p = _all_params()[name]
    params = jax.tree.map(lambda x: 1e3 * x, p.init(jax.random.key(0), BATCH))
    images = np.asarray(p.apply(params))
    assert images.min() >= 0.0 and images.max() <= 1.0 and np.isfinite(images).all()
    # A fresh init is near mid-grey: sigmoid(small) ≈ 0.5.
    fresh = np.asarray(p.apply(p.init(jax.random.key(0), BATCH)))
    assert np.abs(fresh - 0.5).max() < 0.1


@pytest.mark.parametrize("name", list(_all_params()))
def test_gradients_finite_and_nonzero(name):
    p = _all_params()[name]
    params = p.init(jax.random.key(0), BATCH)
    target = np.random.default_rng(1).uniform(size=p.apply(params).shape).astype(np.float32)
    grads = jax.jit(jax.grad(lambda q: jnp.mean((p.apply(q) - target) ** 2)))(params)
    for g in jax.tree.leaves(grads):
        assert np.isfinite(np.asarray(g)).all() and np.abs(np.asarray(g)).max() > 0


@pytest.mark.parametrize("size", [SIZE, (SIZE - 1, SIZE + 1)])
def test_fft_round_trips_an_image(size):
    p = param.fft(size, decay_power=1.5)
    h, w = (size, size) if isinstance(size, int) else size
    images = np.random.default_rng(2).normal(size=(BATCH, h, w, 3)).astype(np.float32)
    back = p.apply(param.fft_from_image(images, decay_power=1.5))
    np.testing.assert_allclose(np.asarray(back), np.asarray(images), atol=1e-5)
    np.testing.assert_allclose(np.asarray(p.apply(p.from_images(images))), np.asarray(images), atol=1e-5)


def test_fft_scale_follows_lucid():
    scale = param.spectrum_scale(8, decay_power=1.0)
    assert scale.shape == (8, 5)
    # DC is floored at 1/size; the highest frequency (f = sqrt(0.5² + 0.5²)) gets the smallest gain.
    np.testing.assert_allclose(scale[0, 0], 8.0 * np.sqrt(64), rtol=1e-6)
    np.testing.assert_allclose(scale[4, 4], np.sqrt(64) / np.sqrt(0.5), rtol=1e-6)
    assert np.argmin(scale) == np.ravel_multi_index((4, 4), scale.shape)
    np.testing.assert_allclose(param.spectrum_scale(8, decay_power=0.0), np.sqrt(64), rtol=1e-6)


def test_fft_init_is_dominated_by_low_frequencies():
    p = param.fft(SIZE)
    images = np.asarray(p.apply(p.init(jax.random.key(0), BATCH)))
    neighbour_corr = np.corrcoef(images[:, :, 1:].ravel(), images[:, :, :-1].ravel())[0, 1]
    assert neighbour_corr > 0.5  # 1/f noise is smooth; white pixel noise would give ~0


@pytest.mark.parametrize("name", ["image_fft", "image_pixel", "image_fft_plain"])
def test_valid_rgb_round_trips_through_colour_and_sigmoid(name):
    p = _all_params()[name]
    images = np.random.default_rng(3).uniform(0.05, 0.95, (BATCH, SIZE, SIZE, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(p.apply(p.from_images(images))), np.asarray(images), atol=1e-4)


def test_decorrelated_space_maps_through_the_normalized_matrix():
    p = param.valid_rgb(param.pixel(4), decorrelate=param.IMAGENET_COLOR_CORRELATION)
    t = np.random.default_rng(4).normal(size=(1, 4, 4, 3)).astype(np.float32)
    m = param.IMAGENET_COLOR_CORRELATION / np.linalg.norm(param.IMAGENET_COLOR_CORRELATION, axis=0).max()
    expected = 1 / (1 + np.exp(-(np.asarray(t) @ m.T)))
    np.testing.assert_allclose(np.asarray(p.apply({"pixels": t})), expected, atol=1e-6)
    assert np.isclose(np.linalg.norm(param.normalized_color_matrix(m), axis=0).max(), 1.0)


def _correlated_frames(n=6, size=8, seed=0):
    """Synthetic uint8 frames whose RGB channels share a strong common component (like real scenes)."""
    rng = np.random.default_rng(seed)
    mixing = np.array([[0.30, 0.05, 0.00], [0.25, 0.10, 0.02], [0.20, -0.05, 0.08]])
    latent = rng.normal(size=(n, size, size, 3))
    rgb = 0.45 + 0.6 * latent @ mixing.T
    return np.clip(np.round(255 * rgb), 0, 255).astype(np.uint8)


def test_fit_color_decorrelation_whitens_the_sample():
    frames = _correlated_frames()
    pixels = frames.reshape(-1, 3) / 255.0
    assert abs(np.corrcoef(pixels, rowvar=False)[0, 1]) > 0.5  # the data really is correlated
    stats = param.fit_color_stats(frames)
    matrix = param.fit_color_decorrelation(frames)
    np.testing.assert_array_equal(matrix, stats.matrix)
    assert matrix.shape == (3, 3)
    np.testing.assert_allclose(matrix, matrix.T, atol=1e-7)  # the symmetric square root
    np.testing.assert_allclose(matrix.astype(np.float64) @ matrix, np.cov(pixels, rowvar=False), atol=1e-6)
    np.testing.assert_allclose(stats.mean, pixels.mean(axis=0), atol=1e-6)
    white = param.whiten(frames, stats).reshape(-1, 3)
    np.testing.assert_allclose(np.cov(white, rowvar=False), np.eye(3), atol=1e-4)
    np.testing.assert_allclose(white.mean(axis=0), 0.0, atol=1e-4)
    # Float frames in [0, 1] give the same fit as uint8 ones.
    np.testing.assert_allclose(param.fit_color_decorrelation(frames / 255.0), matrix, atol=1e-6)


def test_fit_on_flat_colour_stays_invertible():
    frames = np.full((2, 4, 4, 3), 128, np.uint8)
    frames[0, 0, 0] = (130, 130, 130)  # one grey direction only: the covariance has rank 1
    matrix = param.fit_color_decorrelation(frames)
    assert np.isfinite(np.linalg.inv(matrix.astype(np.float64))).all()


def test_color_stats_save_load_round_trip(tmp_path):
    stats = param.fit_color_stats(_correlated_frames())
    path = tmp_path / "color_stats.json"
    param.save_color_stats(path, stats.matrix, stats.mean)
    loaded = param.load_color_stats(path)
    np.testing.assert_array_equal(loaded.matrix, stats.matrix)
    np.testing.assert_array_equal(loaded.mean, stats.mean)
    image = param.image(SIZE, decorrelate=loaded.matrix)  # a fitted matrix plugs straight in
    assert image.apply(image.init(jax.random.key(0), BATCH)).shape == (BATCH, SIZE, SIZE, 3)


def test_bad_inputs_raise_helpful_errors(tmp_path):
    with pytest.raises(JaxinterpError, match="batch"):
        param.fft(SIZE).init(jax.random.key(0), 0)
    with pytest.raises(JaxinterpError, match="basis"):
        param.image(SIZE, basis="laplacian")
    with pytest.raises(JaxinterpError, match="singular"):
        param.image(SIZE, decorrelate=np.ones((3, 3)))
    with pytest.raises(JaxinterpError, match="3 RGB"):
        param.fit_color_decorrelation(np.zeros((2, 4, 4, 4), np.uint8))
    bad = tmp_path / "bad.json"
    bad.write_text('{"matrix": [1]}')
    with pytest.raises(JaxinterpError, match="save_color_stats"):
        param.load_color_stats(bad)
