"""Models: torch parity for every architecture and named activation, building blocks' gradients, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import needs_torch

import jaxinterp
from jaxinterp.errors import JaxinterpError
from jaxinterp.models.impala import ARCHITECTURES, init_params
from jaxinterp.models.layers import _conv, conv2d, lp_pool, max_pool
from jaxinterp.weights.convert import detect, flax_to_torch, torch_to_flax

ARCHS = list(ARCHITECTURES)


@pytest.mark.parametrize(
    "padding,ksize,cin", [(1, 3, 3), (2, 5, 3), (3, 7, 3), (0, 3, 3), (1, 3, 6), (0, 3, 6)]
)
def test_custom_vjp_conv_gradients_equal_plain_conv(padding, ksize, cin):
    # 3 input channels take the patch-matmul path, 6 the XLA convolution
    kx, kw, kg = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (2, 9, 9, cin))
    w = jax.random.normal(kw, (ksize, ksize, cin, 4))
    g = jax.random.normal(kg, _conv(x, w, padding).shape)
    np.testing.assert_allclose(conv2d(x, w, padding), _conv(x, w, padding), rtol=1e-5, atol=1e-5)
    ours = jax.vjp(lambda x, w: conv2d(x, w, padding), x, w)[1](g)
    ref = jax.vjp(lambda x, w: _conv(x, w, padding), x, w)[1](g)
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


def test_custom_vjp_conv_inside_scan_matches_loop():
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
    w0 = jax.random.normal(jax.random.key(2), (3, 3, 3, 3)) * 0.1

    def step(w, _):
        return w - 0.1 * jax.grad(lambda w: jnp.sum(conv2d(x, w, 1) ** 2))(w), None

    scanned = jax.lax.scan(step, w0, None, length=3)[0]
    looped = w0
    for _ in range(3):
        looped = jax.jit(step)(looped, None)[0]
    np.testing.assert_allclose(scanned, looped, rtol=1e-5, atol=1e-6)


def _reduce_window_max_pool(x):
    return jax.lax.reduce_window(
        x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), ((0, 0), (1, 1), (1, 1), (0, 0))
    )


@pytest.mark.parametrize("size", [1, 2, 8, 9, 64])
@pytest.mark.parametrize("ties", [False, True])
def test_slice_max_pool_equals_reduce_window(size, ties):
    x = jax.random.normal(jax.random.key(3), (2, size, size, 4))
    if ties:  # few distinct values: windows hold several maxima, and the first one gets the gradient
        x = jnp.round(x)
    np.testing.assert_array_equal(max_pool(x), _reduce_window_max_pool(x))
    g = jax.random.normal(jax.random.key(4), max_pool(x).shape)
    ours = jax.vjp(max_pool, x)[1](g)[0]
    ref = jax.vjp(_reduce_window_max_pool, x)[1](g)[0]
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6)  # overlapping windows sum in another order


def test_lp_pool_gradient_is_finite_at_zero():
    x = jnp.zeros((1, 4, 4, 2)).at[0, 0, 0, 0].set(3.0).at[0, 0, 1, 0].set(4.0)
    np.testing.assert_allclose(lp_pool(x)[0, 0, 0, 0], 5.0)
    g = jax.grad(lambda x: lp_pool(x).sum())(x)
    assert np.isfinite(g).all() and g[0, 0, 0, 0] == pytest.approx(0.6)


@pytest.mark.parametrize("arch", ARCHS)
def test_conversion_round_trips_exactly(arch):
    a = ARCHITECTURES[arch]
    params = init_params(a, jax.random.key(5), num_actions=9)
    sd = flax_to_torch(params, a, num_actions=9)
    detected, kwargs = detect(sd)
    assert detected is a and kwargs["num_actions"] == 9
    back = torch_to_flax(sd, a, **kwargs)
    jax.tree.map(np.testing.assert_array_equal, back, params)


F32_ROUNDING = 5e-6
"""The most a float32 layer may differ from float64, times the layer's scale (its largest magnitude, at least 1).
Rounding alone stays under 2e-6 for every layer of the three architectures on the test frames, jaxinterp's and
torch's alike; a path that rounds to a shorter mantissa (TF32 or bf16 inputs to a fused convolution or dot, an
approximate square root) is 1e-4 off and more (issue 26: pool1 once 5.9e-4 off)."""


def _assert_f32_precise(side: str, ours: dict, ref: dict, names) -> None:
    """Each layer of ``ours`` (float32) against ``ref`` (float64) at `F32_ROUNDING`, naming the side and layer."""
    for name in names:
        ref64 = np.asarray(ref[name], np.float64)
        scale = max(1.0, float(np.abs(ref64).max()))
        err = np.abs(np.asarray(ours[name], np.float64) - ref64).max() / scale
        assert err <= F32_ROUNDING, f"{side} {name}: {err:.2e} of its scale {scale:.3g} off float64"


@pytest.mark.parametrize("arch", ARCHS)
def test_every_layer_computes_at_f32_precision(arch, heist_frames):
    """jaxinterp's float32 programs, as users run them, against the same network in float64: below float32
    precision on this CPU (a reduced-precision kernel or flag, whichever program it is in) fails here, without
    torch."""
    leaves, tree = jax.tree.flatten_with_path(
        init_params(ARCHITECTURES[arch], jax.random.key(1), num_actions=15)
    )
    keys = jax.random.split(jax.random.key(2), len(leaves))
    params = [  # clearly non-zero biases, as the torch reference has
        a + jax.random.uniform(k, a.shape, minval=-0.5, maxval=0.5)
        if "bias" in jax.tree_util.keystr(path)
        else a
        for (path, a), k in zip(leaves, keys)
    ]
    agent = jaxinterp.Agent(arch, jax.tree.unflatten(tree, params), num_actions=15)
    acts = agent.activations(heist_frames, agent.layer_names)
    with jax.enable_x64(True):
        params64 = jax.tree.map(lambda a: np.asarray(a, np.float64), agent.params)
        ref = jax.jit(agent.forward)(params64, heist_frames.astype(np.float64) / 255.0)
        assert all(a.dtype == np.float64 for a in ref.values())
    _assert_f32_precise("jaxinterp", acts, ref, agent.layer_names)


@needs_torch
@pytest.mark.parametrize("arch", ARCHS)
def test_parity_with_torch_on_heist_frames(arch, heist_frames):
    from torch_models import hooked_activations, random_model

    model = random_model(arch, seed=1, num_actions=15)
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    agent = jaxinterp.agent_from_state_dict(sd)
    hooks, (logits_t, value_t) = hooked_activations(model, heist_frames)
    hooked = [n for n in hooks if n in agent.layer_shapes]
    # every torch submodule with an output is a jaxinterp layer (dropout is the identity at inference)
    assert set(hooks) - set(hooked) <= {"dropout"}, set(hooks) - set(hooked)
    relus = [n for n in agent.layer_names if n.endswith(".relu") and n[: -len(".relu")] in hooks]
    acts = agent.activations(heist_frames, hooked + relus)  # one program for every layer checked
    # Each side against the same torch model in float64 first, so that a mismatch names the side that moved.
    ref, _ = hooked_activations(random_model(arch, seed=1, num_actions=15).double(), heist_frames)
    _assert_f32_precise("torch", hooks, ref, hooked)
    _assert_f32_precise("jaxinterp", acts, ref, hooked)
    logits, value = agent(heist_frames)
    np.testing.assert_allclose(logits, logits_t, atol=1e-5, rtol=0)
    np.testing.assert_allclose(value, value_t, atol=1e-5, rtol=0)
    for name in hooked:
        np.testing.assert_allclose(acts[name], hooks[name], atol=1e-5, rtol=0, err_msg=name)
    for name in relus:
        np.testing.assert_allclose(acts[name], np.maximum(hooks[name[: -len(".relu")]], 0), atol=1e-5, rtol=0)


def test_agent_api_and_errors(heist_frames):
    agent = jaxinterp.Agent.random("impala")
    logits, value = agent(heist_frames)
    assert logits.shape == (16, 15) and value.shape == (16,)
    assert agent.layer_shapes["conv_seqs.2.res_block1"] == (8, 8, 32)
    ref_logits, _ = jax.jit(agent.apply)(agent.params, heist_frames)
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-6)
    with pytest.raises(JaxinterpError, match="valid layers: conv_seqs.0.conv"):
        agent.activations(heist_frames, ["conv_seqs.9"])
    with pytest.raises(JaxinterpError, match="must be uint8"):
        agent(heist_frames.astype(np.float32))
    with pytest.raises(JaxinterpError, match=r"shape \(N, 64, 64, 3\)"):
        agent(heist_frames[:, :32])
    with pytest.raises(JaxinterpError, match="out of range"):
        agent.check_channel("conv_seqs.0.conv", 16)


def test_unknown_layouts_are_refused():
    with pytest.raises(JaxinterpError, match="known layouts: impala"):
        detect({"encoder.weight": np.zeros((2, 2))})
    sd = flax_to_torch(init_params(ARCHITECTURES["impala"]), ARCHITECTURES["impala"])
    sd["hidden_fc.weight"] = sd["hidden_fc.weight"][:, :100]
    with pytest.raises(JaxinterpError, match="hidden_fc.weight"):
        detect(sd)
    del sd["value_fc.bias"]
    with pytest.raises(JaxinterpError, match="missing value_fc.bias"):
        detect(sd)


def test_pad_rows_pads_to_one_shape_and_marks_real_rows():
    from jaxinterp.models.agent import pad_rows

    frames, index = np.ones((3, 2, 2), np.uint8), np.arange(3)
    (f, i), valid = pad_rows(5, (frames, index), 7)
    assert f.shape == (5, 2, 2) and f.dtype == np.uint8 and (f[3:] == 7).all() and (f[:3] == 1).all()
    np.testing.assert_array_equal(i, [0, 1, 2, 7, 7])
    np.testing.assert_array_equal(valid, [True, True, True, False, False])
    (full,), valid = pad_rows(3, (index,))
    np.testing.assert_array_equal(full, index)
    assert valid.all()


def test_forward_from_a_layer_is_the_rest_of_the_network(heist_frames):
    agent = jaxinterp.Agent.random("impala", seed=4)
    layer, images = "conv_seqs.1.res_block1", jnp.asarray(heist_frames, jnp.float32) / 255.0
    full = agent.forward(agent.params, images)
    rest = agent.forward_from(agent.params, layer, full[layer])
    np.testing.assert_allclose(rest[agent.arch.logits], full[agent.arch.logits], rtol=1e-5, atol=1e-6)
    double = {layer: lambda a: 2 * a, "conv_seqs.2.conv": jnp.zeros_like}
    edited = agent.forward(agent.params, images, double)
    np.testing.assert_allclose(
        agent.forward_from(agent.params, layer, full[layer], double)[agent.arch.logits],
        edited[agent.arch.logits],
        rtol=1e-5,
        atol=1e-6,
    )
