"""Tests for feature-visualization objectives: values, algebra, descriptions, the string form and errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp.errors import JaxinterpError
from jaxinterp.featviz import objectives as obj
from jaxinterp.models.agent import Agent

L = "conv_seqs.0.res_block0"
B, H, W, C = 3, 8, 8, 4


@pytest.fixture(scope="module")
def agent():
    return Agent.random("impala", channels=(4, 4, 4))


@pytest.fixture(scope="module")
def acts():
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    return {
        L: jax.random.normal(k1, (B, H, W, C)),
        obj.LOGITS: jax.random.normal(k2, (B, 15)),
        obj.VALUE: jax.random.normal(k3, (B, 1)),
    }


@pytest.fixture(scope="module")
def images():
    return jax.random.uniform(jax.random.key(1), (B, 16, 16, 3))


def test_channel_neuron_direction_values(acts, images):
    a = np.asarray(acts[L])
    np.testing.assert_allclose(obj.channel(L, 2)(acts, images), a[..., 2].mean((1, 2)), rtol=1e-6)
    np.testing.assert_allclose(obj.channel(L)(acts, images, 3), a[..., 3].mean((1, 2)), rtol=1e-6)
    np.testing.assert_allclose(obj.neuron(L, 1)(acts, images), a[:, H // 2, W // 2, 1], rtol=1e-6)
    np.testing.assert_allclose(obj.neuron(L, 1, x=2, y=5)(acts, images), a[:, 5, 2, 1], rtol=1e-6)
    v = np.asarray([0.5, -1.0, 0.0, 2.0], np.float32)
    np.testing.assert_allclose(obj.direction(L, v)(acts, images), (a @ v).mean((1, 2)), rtol=1e-5)
    np.testing.assert_allclose(obj.direction_neuron(L, v, x=1, y=0)(acts, images), a[:, 0, 1] @ v, rtol=1e-5)
    stack = np.stack([v, -v])
    np.testing.assert_allclose(obj.direction(L, stack)(acts, images, 1), -(a @ v).mean((1, 2)), rtol=1e-5)
    t = np.asarray(jax.random.normal(jax.random.key(5), (H, W, C)))
    want = (a * t).sum((1, 2, 3)) / (H * W)
    np.testing.assert_allclose(obj.spatial_direction(L, t)(acts, images), want, rtol=1e-4)
    np.testing.assert_allclose(obj.deepdream(L)(acts, images), (a**2).mean((1, 2, 3)), rtol=1e-5)


def test_action_value_and_action_vs_rest(acts, images):
    logits = np.asarray(acts[obj.LOGITS])
    np.testing.assert_allclose(obj.action(4)(acts, images), logits[:, 4])
    np.testing.assert_allclose(obj.value()(acts, images), np.asarray(acts[obj.VALUE])[:, 0])
    others = np.delete(logits, 4, axis=1)
    lse = np.log(np.exp(others).sum(1))
    np.testing.assert_allclose(obj.action_vs_rest(4)(acts, images), logits[:, 4] - lse, rtol=1e-5)
    np.testing.assert_allclose(
        obj.action_vs_rest(None, "mean")(acts, images, 4), logits[:, 4] - others.mean(1), rtol=1e-5, atol=1e-6
    )


def test_penalties():
    # Penalties are per-pixel means: small images give the same values, and cost less to run op by op.
    images = jax.random.uniform(jax.random.key(1), (B, 16, 16, 3))
    grey = jnp.full((2, 16, 16, 3), 0.5)
    for penalty in (obj.total_variation(), obj.l1(), obj.blur()):
        np.testing.assert_allclose(penalty({}, grey), 0.0, atol=1e-7)
        assert (np.asarray(penalty({}, images)) > 0).all()
    np.testing.assert_allclose(obj.l2()({}, grey), 0.0, atol=1e-5)
    stripes = jnp.zeros((1, 16, 16, 3)).at[:, :, ::2].set(1.0)  # vertical lines: only x differences
    np.testing.assert_allclose(obj.total_variation()({}, stripes), 1.0, rtol=1e-6)
    # Gradients exist (no NaN) even where the penalty is 0.
    for penalty in (obj.l1(), obj.l2(), obj.blur(), obj.total_variation()):
        g = jax.grad(lambda x, p=penalty: p({}, x).sum())(grey)
        assert np.isfinite(np.asarray(g)).all()


def test_diversity_is_the_gram_cosine_to_the_other_facets():
    same = {L: jnp.ones((3, H, W, C))}
    np.testing.assert_allclose(
        obj.diversity(L)(same, None), 2 / 3, rtol=1e-5
    )  # two others, cosine 1, / batch
    np.testing.assert_allclose(obj.diversity(L)({L: jnp.ones((1, H, W, C))}, None), 0.0)
    a = jnp.zeros((2, H, W, C)).at[0, ..., 0].set(1.0).at[1, ..., 1].set(1.0)  # disjoint channels: orthogonal
    np.testing.assert_allclose(obj.diversity(L)({L: a}, None), 0.0, atol=1e-7)


def test_algebra_values_and_descriptions(acts, images):
    a, b = obj.channel(L, 1), obj.channel(L, 2)
    combo = a - 0.5 * b + 2 * obj.total_variation()
    want = a(acts, images) - 0.5 * b(acts, images) + 2 * obj.total_variation()(acts, images)
    np.testing.assert_allclose(combo(acts, images), want, rtol=1e-5)
    assert combo.description == (f"channel({L!r}, 1) - 0.5 * channel({L!r}, 2) + 2 * total_variation()")
    assert combo.layers == (L,)
    assert (-(a + b)).description == f"-(channel({L!r}, 1) + channel({L!r}, 2))"
    assert (a - (a + b)).description == f"channel({L!r}, 1) - (channel({L!r}, 1) + channel({L!r}, 2))"
    assert (0.5 * (a + b)).description == f"0.5 * (channel({L!r}, 1) + channel({L!r}, 2))"
    np.testing.assert_allclose((a / 4)(acts, images), a(acts, images) / 4, rtol=1e-6)
    family = obj.channel(L) - 1e-3 * obj.total_variation()
    assert family.description == f"channel({L!r}, i) - 0.001 * total_variation()"
    assert family.describe(7) == f"channel({L!r}, 7) - 0.001 * total_variation()"
    assert family.uses_index and not a.uses_index
    with pytest.raises(TypeError):
        a + 1.0
    with pytest.raises(TypeError):
        a * b


def test_index_is_traced_one_compile_serves_every_channel(acts, images):
    family = obj.channel(L) + obj.neuron(L)
    traces = []

    @jax.jit
    def score(index):
        traces.append(1)
        return family(acts, images, index)

    for c in range(C):
        np.testing.assert_allclose(
            score(c), obj.channel(L, c)(acts, images) + obj.neuron(L, c)(acts, images), rtol=1e-5
        )
    assert len(traces) == 1
    batched = jax.vmap(lambda i: family(acts, images, i))(jnp.arange(C))
    np.testing.assert_allclose(batched, np.stack([score(c) for c in range(C)]), rtol=1e-6)
    # The gradient of a channel is a one-hot broadcast, not a scatter: it is exact.
    g = jax.grad(lambda x: obj.channel(L)({L: x}, images, 2).sum())(acts[L])
    np.testing.assert_allclose(np.asarray(g)[..., 2], 1 / (H * W)) and np.testing.assert_array_equal(
        np.asarray(g)[..., [0, 1, 3]], 0
    )


@pytest.mark.parametrize(
    "text, want",
    [
        ("conv_seqs.2.res_block1:7", "channel('conv_seqs.2.res_block1', 7)"),
        ("conv_seqs.2.res_block1", "channel('conv_seqs.2.res_block1', i)"),
        ("layer:7@3,4", "neuron('layer', 7, x=3, y=4)"),
        ("action:2", "action(2)"),
        ("action", "action(i)"),
        ("action_vs_rest:2", "action_vs_rest(2, 'logsumexp')"),
        ("value", "value()"),
        ("deepdream:conv4a", "deepdream('conv4a')"),
        ("conv4a:7 - 0.5*conv4a:3", "channel('conv4a', 7) - 0.5 * channel('conv4a', 3)"),
        ("2 * (a:1 + b:2) - 1e-3*tv", "2 * (channel('a', 1) + channel('b', 2)) - 0.001 * total_variation()"),
        ("a:1/2 + -b:0", "0.5 * channel('a', 1) + -channel('b', 0)"),
        ("a:1 - l1 - blur - 0.1*diversity:a", "channel('a', 1) - l1(0.5) - blur() - 0.1 * diversity('a')"),
    ],
)
def test_parse(text, want):
    assert obj.parse_objective(text).description == want


def test_parse_with_a_layer():
    assert obj.parse_objective("channel", layer="L").description == "channel('L', i)"
    assert obj.parse_objective("neuron@1,2", layer="L").description == "neuron('L', i, x=1, y=2)"
    assert obj.parse_objective("channel:3 - 1e-2*tv", layer="L").description == (
        "channel('L', 3) - 0.01 * total_variation()"
    )
    assert obj.parse_objective("deepdream - diversity", layer="L").description == (
        "deepdream('L') - diversity('L')"
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "it is empty"),
        ("conv4a:", "expected a number but found the end"),
        ("conv4a:1.5", "whole number"),
        ("conv4a:1 +", "ends where"),
        ("conv4a:1 + 2", "needs an objective on both sides"),
        ("conv4a:1 * conv4a:2", "cannot be multiplied"),
        ("3", "is a number, not an objective"),
        ("conv4a:1 $ 2", "unexpected character '\\$'"),
        ("(conv4a:1", "expected '\\)'"),
        ("deepdream", "needs a layer"),
        ("conv4a@1", "expected ','"),
    ],
)
def test_parse_errors_are_one_line(text, message):
    with pytest.raises(JaxinterpError, match=message) as err:
        obj.parse_objective(text)
    assert "\n" not in str(err.value)


def test_validate_against_an_agent(agent):
    layer = "conv_seqs.0.res_block0"
    assert obj.channel(layer).num_indices(agent) == 4
    assert obj.action().num_indices(agent) == 15
    assert (obj.channel(layer) + obj.action()).num_indices(
        agent
    ) == 4  # both take the index: the smaller range
    assert obj.value().num_indices(agent) is None
    obj.parse_objective("action:3 - value + deepdream:conv_seqs.1.conv").validate(agent)
    cases = [
        (obj.channel("nope"), "unknown layer 'nope'.*valid layers"),
        (obj.channel(layer, 4), "channel 4 is out of range for layer 'conv_seqs.0.res_block0'.*0-3"),
        (obj.action(15), "action 15 is out of range for the action logits.*0-14"),
        (obj.neuron(layer, 0, x=40), "x=40 is outside layer"),
        (obj.neuron("hidden_fc", 0), "no spatial positions"),
        (
            obj.direction(layer, np.ones(5)),
            "shape \\(5,\\) but layer 'conv_seqs.0.res_block0' needs \\(4,\\)",
        ),
        (obj.spatial_direction(layer, np.ones((8, 8, 4))), "needs \\(32, 32, 4\\)"),
    ]
    for objective, message in cases:
        with pytest.raises(JaxinterpError, match=message) as err:
            objective.validate(agent)
        assert "\n" not in str(err.value)
    with pytest.raises(JaxinterpError, match="index 4 is out of range for channel"):
        obj.channel(layer).check_index(agent, 4)
    with pytest.raises(JaxinterpError, match="shape"):
        obj.direction(layer, np.ones((2, 2, 2)))
    with pytest.raises(JaxinterpError, match="'logsumexp' or 'mean'"):
        obj.action_vs_rest(1, "max")


def test_objectives_on_the_agent_read_only_their_layers(agent):
    images = jax.random.uniform(jax.random.key(2), (2, 64, 64, 3))
    acts = jax.jit(agent.forward)(agent.params, images)
    objective = obj.action_vs_rest(3) + obj.value()
    read = obj.read_acts(agent, acts, objective.layers)
    assert set(read) == {obj.LOGITS, obj.VALUE}
    logits, value = acts[agent.arch.logits], acts[agent.arch.value][:, 0]
    want = logits[:, 3] - jax.nn.logsumexp(jnp.delete(logits, 3, axis=1), axis=1) + value
    np.testing.assert_allclose(objective(read, images), want, rtol=1e-5)
    # Dense layers work with channel(): one unit.
    np.testing.assert_allclose(
        obj.channel("hidden_fc", 5)({"hidden_fc": acts["hidden_fc"]}, images),
        acts["hidden_fc"][:, 5],
        rtol=1e-6,
    )
