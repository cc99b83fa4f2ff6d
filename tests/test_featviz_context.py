"""In-context feature visualization: patches pasted into real frames, and the engine optimizing them."""

import jax
import multihost_worker as worker
import numpy as np
import pytest

from jaxinterp.errors import JaxinterpError
from jaxinterp.featviz import objectives as obj
from jaxinterp.featviz import param as param_lib
from jaxinterp.featviz.context import make_context
from jaxinterp.featviz.engine import make_visualize
from jaxinterp.models.agent import preprocess

LAYER = "conv_seqs.1.res_block1"  # 16 x 16 positions, jump 4: the patch covers a few of them
SIZE = 8


def _patches(k: int, size: int = SIZE) -> np.ndarray:
    """Patches no real frame contains (distinct per facet), so the test can find where they went."""
    return np.stack([np.full((size, size, 3), 0.123 * (i + 1), np.float32) for i in range(k)])


def test_pasted_exactly_without_keys(heist_frames):
    context = make_context(heist_frames, (20.5, 40.0), size=SIZE)
    assert context.top_left == (16, 36)  # the centre, less half the patch
    out = np.asarray(jax.jit(context.paste)(_patches(2)))
    frames = np.asarray(preprocess(heist_frames))[: context.measure_count]
    assert out.shape == (2 * len(frames), 64, 64, 3)
    for i, facet in enumerate(out.reshape(2, len(frames), 64, 64, 3)):
        expected = frames.copy()
        expected[:, 16:24, 36:44] = 0.123 * (i + 1)
        np.testing.assert_allclose(facet, expected, atol=1e-6)  # jitted and eager /255 differ by an ulp


def test_pasted_with_keys_into_drawn_frames_within_the_jitter(heist_frames):
    context = make_context(heist_frames, (32.0, 32.0), size=SIZE, jitter=3, batch=6)
    keys = jax.random.split(jax.random.key(0), 2)
    paste = jax.jit(context.paste)
    out = np.asarray(paste(_patches(2), keys)).reshape(2, 6, 64, 64, 3)
    frames = np.asarray(preprocess(heist_frames))
    shifts = set()
    for i, facet in enumerate(out):
        for image in facet:
            mask = np.all(image == np.float32(0.123 * (i + 1)), axis=-1)
            ys, xs = np.nonzero(mask)
            y0, x0 = ys.min(), xs.min()
            assert mask.sum() == SIZE * SIZE and (ys.max() - y0, xs.max() - x0) == (SIZE - 1, SIZE - 1)
            assert abs(y0 - 28) <= 3 and abs(x0 - 28) <= 3
            shifts.add((y0, x0))
            # Outside the patch the frame is one of the bank's, untouched.
            outside = ~mask
            assert any(np.allclose(image[outside], f[outside], atol=1e-6) for f in frames)
    assert len(shifts) > 1  # the jitter moves it
    # The same keys give the same frames; others do not.
    np.testing.assert_array_equal(np.asarray(paste(_patches(2), keys)).reshape(out.shape), out)


def test_patch_stays_inside_the_frame_at_the_border(heist_frames):
    context = make_context(heist_frames, (0.5, 63.5), size=SIZE, jitter=4, batch=16)
    assert context.top_left == (0, 64 - SIZE)
    out = np.asarray(jax.jit(context.paste)(_patches(1), jax.random.split(jax.random.key(1), 1)))
    for image in out:  # always whole: shifted against the edge rather than cut
        assert np.all(image == np.float32(0.123), axis=-1).sum() == SIZE * SIZE


def test_bad_context_settings_are_clear_errors(heist_frames):
    with pytest.raises(JaxinterpError, match="larger than the 64-px frame"):
        make_context(heist_frames, (32, 32), size=65)
    with pytest.raises(JaxinterpError, match="batch .* must be an int >= 1"):
        make_context(heist_frames, (32, 32), batch=0)
    with pytest.raises(JaxinterpError, match="no context frames"):
        make_context(heist_frames[:0], (32, 32))
    with pytest.raises(JaxinterpError, match="must be uint8"):
        make_context(heist_frames / 255.0, (32, 32))
    context = make_context(heist_frames, (32, 32), size=SIZE)
    with pytest.raises(JaxinterpError, match="patches must be 8x8x3"):
        context.paste(_patches(1, size=4))
    with pytest.raises(JaxinterpError, match="pass transforms=None"):
        worker.config(context=context)


def test_a_context_is_a_pytree_of_its_frames(heist_frames):
    # Jitted functions take it as an argument, so its frames are not a constant of the compiled program.
    context = make_context(heist_frames, (20.5, 40.0), size=SIZE)
    assert jax.tree.leaves(context) == [context.frames]
    rebuilt = jax.tree.map(lambda x: x + 0, context)
    assert (rebuilt.top_left, rebuilt.size, rebuilt.jitter, rebuilt.batch) == (
        context.top_left,
        context.size,
        context.jitter,
        context.batch,
    )
    hlo = jax.jit(lambda c, p: c.paste(p)).lower(context, _patches(1)).as_text()
    assert len(hlo) < 100_000  # the frames are a parameter (as a closed-over constant: megabytes of text)


@pytest.fixture(scope="module")
def agent():
    return worker.tiny_agent()


@pytest.fixture(scope="module")
def context_run(agent, heist_frames):
    context = make_context(heist_frames, (34.0, 34.0), size=SIZE, jitter=2, batch=4)
    config = worker.config(
        steps=24,
        thresholds=(0,),
        facets=1,
        transforms=None,
        context=context,
        param=param_lib.image(SIZE),
        max_images=2,  # chunks of two channels: the test of neighbours reuses the program
    )
    visualize = make_visualize(agent, obj.neuron(LAYER, x=8, y=8), config)
    return visualize, context, visualize(0, [0, 1, 2])


def test_values_are_the_neuron_in_the_measure_frames(agent, context_run):
    _, context, result = context_run
    assert result.images.shape == (2, 3, 1, SIZE, SIZE, 3)
    # Channel-major, the measure frames with the patch at its exact place.
    acts = jax.jit(lambda p: agent.forward(agent.params, context.paste(p))[LAYER][:, 8, 8])(
        result.final[:, 0]
    )
    acts = np.asarray(acts)
    per_channel = acts.reshape(3, context.measure_count, -1)
    expected = np.stack([per_channel[c, :, c].mean() for c in range(3)])
    np.testing.assert_allclose(result.values[-1, :, 0], expected, rtol=1e-4, atol=1e-5)
    # The optimization raised every channel above where its patch started (measured: by 0.1-0.6).
    assert (result.values[-1] > result.values[0] + 0.05).all(), result.values


def test_a_context_job_does_not_depend_on_its_neighbours(context_run):
    visualize, _, result = context_run
    assert visualize.chunk_channels == 2
    moved = visualize(0, [2, 0])
    np.testing.assert_allclose(moved.images[:, 0], result.images[:, 2], atol=1e-5)
    np.testing.assert_allclose(moved.images[:, 1], result.images[:, 0], atol=1e-5)
