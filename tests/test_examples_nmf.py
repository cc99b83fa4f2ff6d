"""NMF directions: the factorization recovers planted parts, and its directions work as features everywhere."""

import jax
import numpy as np
import pytest
from test_examples_support import random_agent

from jaxinterp.errors import JaxinterpError
from jaxinterp.examples import features, find, nmf, spatial

LAYER = "conv_seqs.1.res_block1"


def test_nmf_recovers_planted_nonnegative_parts():
    rng = np.random.default_rng(0)
    h0 = np.zeros((3, 12))
    h0[0, :4], h0[1, 4:8], h0[2, 6:] = 1.0, 2.0, 0.5  # parts 1 and 2 overlap on channels 6, 7
    w0 = rng.exponential(size=(500, 3)) * (rng.random((500, 3)) < 0.5)
    x = (w0 @ h0).astype(np.float32)
    w, h = (np.asarray(a) for a in nmf.nmf(x, 3, 2000))
    assert (w >= 0).all() and (h >= 0).all()
    assert np.sum((x - w @ h) ** 2) / np.sum(x**2) < 1e-3
    unit = lambda m: m / np.linalg.norm(m, axis=1, keepdims=True)
    cos = unit(h0) @ unit(h).T  # every planted part is one of the found ones
    assert cos.max(axis=1).min() > 0.99
    again = np.asarray(nmf.nmf(x, 3, 2000)[1])
    np.testing.assert_array_equal(again, h)  # the same key, the same parts
    other = np.asarray(nmf.nmf(x, 3, 10, jax.random.key(1))[1])
    assert not np.array_equal(other, np.asarray(nmf.nmf(x, 3, 10)[1]))


def test_fit_directions_orders_by_share_and_feeds_the_example_tools():
    agent = random_agent()
    frames = np.random.default_rng(2).integers(0, 256, (12, 64, 64, 3), dtype=np.uint8)
    dirs = nmf.fit_directions(agent, LAYER, frames, 3, steps=300, max_rows=500)
    assert dirs.components.shape == (3, 8) and dirs.rows == 500
    np.testing.assert_allclose(np.linalg.norm(dirs.components, axis=1), 1.0, rtol=1e-5)
    assert (dirs.components >= 0).all() and 0.0 < dirs.explained <= 1.0
    assert np.all(np.diff(dirs.share) <= 0) and np.isclose(dirs.share.sum(), 1.0)
    feature = dirs.feature()
    maps = features.compute_feature_maps(agent, feature, frames)
    acts = features.compute_feature_maps(agent, LAYER, frames)
    np.testing.assert_allclose(maps, np.maximum(acts, 0) @ dirs.components.T, rtol=1e-4, atol=1e-5)
    found = find.find_examples(agent, feature, frames, k=2)
    mosaics = spatial.spatial_examples(agent, feature, frames)
    assert found.top.values.shape[0] == mosaics.values.shape[0] == 3
    again = nmf.fit_directions(agent, LAYER, frames, 3, steps=300, max_rows=500)
    np.testing.assert_array_equal(again.components, dirs.components)  # reproducible from the seed
    with pytest.raises(JaxinterpError, match="between 1 and the layer's 8 channels"):
        nmf.fit_directions(agent, LAYER, frames, 9)
    with pytest.raises(JaxinterpError, match="unknown layer"):
        nmf.fit_directions(agent, "conv9", frames, 2)
