"""The feature-visualization engine against an independent reference: a plain optax loop, one image at a time.

The engine vmaps jobs over channels and facets inside a ``shard_map`` and runs its steps in one ``lax.scan``. The
reference here does none of that: for one (channel, facet) it draws the image from the same key, applies the
same random transforms with the same per-step keys, and takes Adam steps in a Python loop over a jitted step, the
channel's mean activation written out by hand. Keys follow the engine's documented protocol, read from its source:
a job's key is ``fold_in(fold_in(key(seed), channel), facet)``, split in two (init key, step key); the image is
``param.image().init(init_key, 1)``; step t transforms with ``fold_in(step_key, t)``. The transforms replay key
for key, so the comparison keeps them on (the default ``standard_transforms``).

The objectives avoid max-pooling on purpose. A fresh image is nearly flat (pixel std ~0.0025), so in ~1% of a
max-pool's 3×3 windows the two largest inputs are within 1e-6 of each other; the rounding of a differently batched
program (the engine's vmap, or even a batch of 2 against 1) then picks another maximum, the gradient goes to
another pixel, and Adam's first step (about ``lr * sign(g)``) turns that into image differences of 0.005-0.05
after a few steps (measured at impala ``conv_seqs.1.res_block0``, with constant or reflect padding alike), while
the jobs without such a tie agree to 1e-6. So the impala case reads the first convolution (before its max-pool),
with every default (Adam's too), and the deep case uses the interpretable CNN, whose LP pools are smooth.

The deep case gives both sides ``optax.adam(lr, eps=1e-6)`` through the engine's ``optimizer`` option. With
optax's default eps=1e-8, hundreds of the FFT's high-frequency gradients lie below 1e-8, so their float32
rounding noise (~1e-10, the same in both programs up to summation order) is 10% of them, and Adam, which scales
each update by 1/(|g| + eps), passes that on: one job drifted 3.7e-5 from the reference in 6 steps (inside this
file's tolerance, but only just); with eps=1e-6 the worst job is 2e-6 off.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxinterp.featviz import objectives as obj
from jaxinterp.featviz import param as param_lib
from jaxinterp.featviz import transforms as tf
from jaxinterp.featviz.engine import VisualizeConfig, make_visualize
from jaxinterp.models.agent import Agent

ADAM_EPS = 1e-6
"""Adam's epsilon for the deep case (optax's default is 1e-8; the impala case keeps it): see the module docstring."""
CASES = {  # arch, widths of a small random agent (None: the architecture's), layer, channels, Adam's eps
    "impala": ("impala", (4, 4, 4), "conv_seqs.0.conv", (0, 2, 3), None),
    "interpretable-cnn": ("interpretable-cnn", None, "conv3a.relu", (1, 6), ADAM_EPS),
}
FACETS = 2
SEED = 7
STEPS = 6
THRESHOLDS = (0, 3)
LR = 0.05
RTOL = 1e-4
ATOL = 1e-5
# Compiling with XLA's backend optimizations costs more than these few steps save (as in the engine's tests).
FAST_COMPILE = (("xla_backend_optimization_level", 0),)


def _reference_fns(agent: Agent, layer: str, optimizer: optax.GradientTransformation):
    """The jitted pieces of the reference, for one image: init and one Adam step (each with the image they
    leave), and the channel's value on images."""
    image, spec = param_lib.image(), tf.standard_transforms()

    def init(key):
        params = image.init(key, 1)
        return params, optimizer.init(params), image.apply(params)[0]

    def value(images, c):  # the channel's mean over positions, (B,)
        return agent.forward(agent.params, images)[layer][..., c].mean(axis=(1, 2))

    def step(params, opt_state, step_key, t, c):
        def loss_fn(p):
            seen = tf.apply(jax.random.fold_in(step_key, t), image.apply(p), spec)
            return -value(seen, c)[0]

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, loss, image.apply(params)[0]

    jit = functools.partial(jax.jit, compiler_options=dict(FAST_COMPILE))
    return jit(init), jit(step), jit(value)


def _reference(fns, channel: int, facet: int) -> dict:
    """One job, by hand: images at steps 0..STEPS, the loss at each step, the channel's value on each image."""
    init, step, value = fns
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(SEED), channel), facet)
    init_key, step_key = jax.random.split(key)
    params, opt_state, im = init(init_key)
    images, losses = [im], []
    for t in range(STEPS):
        params, opt_state, loss, im = step(params, opt_state, step_key, jnp.int32(t), jnp.int32(channel))
        images.append(im)
        losses.append(loss)
    images = np.stack(images)  # (STEPS + 1, 64, 64, 3)
    values = np.asarray(value(images, jnp.int32(channel)))
    return {"images": images, "values": values, "losses": np.asarray(losses)}


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    arch, widths, layer, channels, eps = CASES[request.param]
    agent = Agent.random(arch, seed=11, channels=widths)
    optimizer = optax.adam(LR) if eps is None else optax.adam(LR, eps=eps)
    config = VisualizeConfig(
        steps=STEPS,
        thresholds=THRESHOLDS,
        facets=FACETS,
        lr=LR,
        optimizer=None if eps is None else optimizer,
        compiler_options=FAST_COMPILE,
    )
    assert config.transforms == tf.standard_transforms() and config.param is None  # the defaults, replayed
    visualize = make_visualize(agent, obj.channel(layer), config)
    fns = _reference_fns(agent, layer, optimizer)
    reference = {(c, f): _reference(fns, c, f) for c in channels for f in range(FACETS)}
    return visualize, channels, visualize(SEED, channels), reference


def test_job_keys_are_the_documented_fold_ins(case):
    visualize, channels, _, _ = case
    data = visualize.job_keys(jax.random.key(SEED), np.asarray(channels, np.int32))
    for i, c in enumerate(channels):
        for f in range(FACETS):
            expected = jax.random.fold_in(jax.random.fold_in(jax.random.key(SEED), c), f)
            np.testing.assert_array_equal(data[i, f], jax.random.key_data(expected))


def test_engine_equals_a_plain_optax_loop_per_channel_and_facet(case):
    _, channels, result, reference = case
    kept = [*THRESHOLDS, STEPS]
    assert result.thresholds == tuple(kept) and list(result.channels) == list(channels)
    for i, c in enumerate(channels):
        for f in range(FACETS):
            ref, where = reference[c, f], f"channel {c}, facet {f}"
            np.testing.assert_allclose(
                result.images[:, i, f], ref["images"][kept], rtol=RTOL, atol=ATOL, err_msg=where
            )
            np.testing.assert_allclose(
                result.values[:, i, f], ref["values"][kept], rtol=RTOL, atol=ATOL, err_msg=where
            )
            np.testing.assert_allclose(
                result.losses[i, f], ref["losses"], rtol=RTOL, atol=ATOL, err_msg=where
            )
    # Not a vacuous match: the images moved and the channel rose; channels and facets differ.
    final = result.final
    assert np.abs(final - result.images[0]).max() > 0.05
    assert (result.values[-1] > result.values[0]).all(), result.values
    assert not np.allclose(final[0, 0], final[1, 0], atol=1e-3)
    assert not np.allclose(final[0, 0], final[0, 1], atol=1e-3)
