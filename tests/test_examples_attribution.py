"""Attribution: the delta-injected forward, gradient × activation, integrated-gradients completeness."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from test_examples_support import random_agent

from jaxinterp.errors import JaxinterpError
from jaxinterp.examples import attribution as attr
from jaxinterp.models.agent import Agent, preprocess
from jaxinterp.report import overlays as heatmaps

LAYER = "conv_seqs.1.res_block0"


def biased_agent() -> Agent:
    """Small random IMPALA with random biases: with zero biases the net is positively homogeneous, which would
    make integrated gradients exact for any step count and the completeness test toothless."""
    return random_agent(bias=0.1)


@functools.cache
def frames(n: int = 3) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)


def test_forward_with_zero_delta_is_forward_and_delta_gradient_is_exact():
    agent = biased_agent()
    x = preprocess(frames())
    acts = jax.jit(agent.forward)(agent.params, x)
    zero = jnp.zeros((len(x), *agent.layer_shapes[LAYER]))
    perturbed = jax.jit(lambda p, x, d: attr.forward_with_delta(agent, p, x, LAYER, d))
    again = perturbed(agent.params, x, zero)
    for name in acts:
        np.testing.assert_array_equal(np.asarray(again[name]), np.asarray(acts[name]))
    # The delta lands where the layer is produced: everything after it sees it, everything before does not.
    bumped = perturbed(agent.params, x, zero + 1.0)
    np.testing.assert_allclose(bumped[LAYER], acts[LAYER] + 1.0, rtol=1e-6)
    np.testing.assert_array_equal(
        bumped["conv_seqs.1.res_block0.conv1"], acts["conv_seqs.1.res_block0.conv1"]
    )
    assert not np.allclose(bumped["logits_fc"], acts["logits_fc"])
    # d logit_a / d hidden_fc.relu is the logits kernel's column a.
    grad = jax.grad(
        lambda d: attr.forward_with_delta(agent, agent.params, x, "hidden_fc.relu", d)["logits_fc"][
            :, 4
        ].sum()
    )(jnp.zeros((len(x), 256)))
    np.testing.assert_allclose(
        grad, np.broadcast_to(agent.params["logits_fc"]["kernel"][:, 4], (len(x), 256))
    )


def test_gradient_x_input_matches_direct_gradient():
    agent = biased_agent()
    got = attr.gradient_x_activation(agent, frames(), 2, batch_size=2)  # 3 frames: one padded batch
    x = preprocess(frames())
    g = jax.jit(jax.grad(lambda im: agent.forward(agent.params, im)["logits_fc"][:, 2].sum()))(x)
    np.testing.assert_allclose(got, x * g, rtol=1e-4, atol=1e-6)
    layer = attr.gradient_x_activation(agent, frames(), "value", layer=LAYER)
    assert layer.shape == (3, *agent.layer_shapes[LAYER])


@pytest.mark.parametrize(("layer", "target"), [(attr.INPUT, 5), (LAYER, "value")])
def test_integrated_gradients_completeness(layer, target):
    agent = biased_agent()
    result = attr.integrated_gradients(agent, frames(2), target, layer=layer, steps=128)
    total = result.values.reshape(2, -1).sum(1)
    change = result.output - result.baseline_output
    assert np.abs(change).min() > 1e-3  # a real change to account for
    np.testing.assert_allclose(total, change, rtol=0.02)  # relu kinks: the error falls roughly as 1/steps
    # The endpoints are the model's own outputs: at the frames, and with the layer (or the image) zeroed.
    acts = jax.jit(agent.forward)(agent.params, preprocess(frames(2)))
    out = acts["logits_fc"][:, 5] if target == 5 else acts["value_fc"][:, 0]
    np.testing.assert_allclose(result.output, out, rtol=1e-5, atol=1e-6)


def test_saliency_overlay_png(tmp_path):
    agent = biased_agent()
    a = attr.gradient_x_activation(agent, frames(2), 0, layer=LAYER)
    path = heatmaps.write_saliency(tmp_path / "s.png", agent, frames(2), a, layer=LAYER, signed=True, scale=1)
    with Image.open(path) as im:
        assert im.size == (2 * 64, 2 * 64)
    assert attr.saliency(a).shape == (2, 16, 16) and (attr.saliency(a) >= 0).all()


def test_bad_targets():
    agent = biased_agent()
    with pytest.raises(JaxinterpError, match="out of range"):
        attr.gradient_x_activation(agent, frames(1), 15)
    with pytest.raises(JaxinterpError, match="'value'"):
        attr.gradient_x_activation(agent, frames(1), "values")
    with pytest.raises(JaxinterpError, match="unknown layer"):
        attr.integrated_gradients(agent, frames(1), 0, layer="conv_seqs.7")
