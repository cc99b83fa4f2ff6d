"""Receptive fields: every spatial layer of every architecture has one, and it equals the gradient support."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_examples_support import random_agent

from jaxinterp.models.impala import ARCHITECTURES
from jaxinterp.models.receptive import FRAME_SIZE, WHOLE_FRAME, boxes, receptive_field, receptive_fields

# Layers whose fields end inside the frame, so the gradient support checks the field's exact edges, plus one
# per architecture whose field spills past the frame on every side.
LAYERS = {
    "impala": [
        "conv_seqs.0.conv",
        "conv_seqs.0.max_pool2d",
        "conv_seqs.0.res_block1",
        "conv_seqs.1.res_block0.relu",
    ],
    "impala-procgen-tools": [
        "embedder.block1.res1.conv1.relu",
        "embedder.block2.max_pool",
        "embedder.block3.relu",
    ],
    "interpretable-cnn": ["conv1a", "pool1", "conv2b.relu", "conv3a"],
}


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_every_spatial_layer_has_a_field_that_tiles_the_frame(arch):
    agent = random_agent(arch)
    rfs = receptive_fields(agent)
    assert list(rfs) == agent.conv_layer_names
    for layer, rf in rfs.items():
        h = agent.layer_shapes[layer][0]
        assert rf.jump * h == FRAME_SIZE, layer
        first, last = rf.box(0, 0), rf.box(h - 1, h - 1)
        assert first[0] <= 0 < first[1] and last[0] < FRAME_SIZE <= last[1], layer
    dense = next(n for n, s in agent.layer_shapes.items() if len(s) == 1)
    assert receptive_field(agent, dense) == WHOLE_FRAME


@functools.partial(jax.jit, static_argnums=(0, 1))
def _support(agent, layer, params, x, pos):
    """Pixels with a nonzero gradient of channel 0 at each position (P, 64, 64), over the batch ``x``."""

    def one(p):
        g = jax.grad(lambda im: agent.forward(params, im)[layer][:, p[0], p[1], 0].sum())(x)
        return (jnp.abs(g) > 0).any((0, 3))

    return jax.vmap(one)(pos)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_field_equals_gradient_support(arch):
    agent = random_agent(arch, positive=True)
    # Positive weights and inputs: no relu is dead and no gradient cancels, so the support is every input pixel
    # that can reach the position; a max-pool passes one pixel per window, so take the union over a batch.
    params = agent.params
    x = jax.random.uniform(jax.random.key(1), (8, 64, 64, 3), minval=0.05, maxval=1.0)
    for layer in LAYERS[arch]:
        h = agent.layer_shapes[layer][0]
        pos = np.array([(0, 0), (h // 2, h // 3), (h - 1, h - 1), (1, h - 2)])

        rf = receptive_field(agent, layer)
        expected = boxes(rf, pos[:, 0], pos[:, 1]).clip(0, FRAME_SIZE)
        for (y, x_), s, box in zip(
            pos, np.asarray(_support(agent, layer, params, x, pos)), expected, strict=True
        ):
            ys, xs = np.nonzero(s)
            got = (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1)
            assert got == tuple(box), f"{layer} at {(y, x_)}: support {got}, field {tuple(box)}"


def test_input_and_dense_fields():
    agent = random_agent("impala")
    assert receptive_field(agent, "input").box(5, 7) == (5, 6, 7, 8)
    assert tuple(WHOLE_FRAME.box(0, 0)) == (0, FRAME_SIZE, 0, FRAME_SIZE)
