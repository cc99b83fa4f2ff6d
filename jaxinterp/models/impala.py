"""The three supported agent CNNs as Flax modules that return every named activation.

Each module maps images in [0, 1] (N, 64, 64, 3) (and optional ``perturb``: {name: delta added there, or a function editing it}) to a dict ``{layer name: activation}`` in forward order, where the
names are the submodule paths of the torch model that produced the checkpoint (what a torch forward hook on that
module returns, as NHWC) plus ``<name>.relu`` where the network applies a relu to that activation. Under ``jit``
unused entries cost nothing (XLA removes dead code), so a forward "truncated at a layer" is simply reading that
entry. Parameter names are the torch module paths too, which makes weight conversion a per-tensor transpose.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxinterp.errors import JaxinterpError
from jaxinterp.models.layers import Conv, lp_pool, max_pool

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "ImpalaCNN",
    "InterpretableCNN",
    "ProcgenToolsImpala",
    "activation_shapes",
    "get_architecture",
    "init_params",
]

# Hidden layers as the procgen PPO baseline initializes them (openai/train-procgen's IMPALA CNN uses tf.layers'
# default, Glorot uniform; train-procgen-pytorch uses xavier_uniform); heads as PPO has them (orthogonal, 0.01 for
# the policy, 1 for the value). Measured on one random-action Heist rollout (16,384 frames), one PPO update moves the
# policy KL 0.0019 from this init and 0.00016 from torch's default (variance 1/(3 fan_in)), whose small features
# move it a tenth as far (initial logits std 0.0004 vs 0.0038). Orthogonal sqrt(2) (CleanRL's NatureCNN choice)
# compounds through the residual blocks instead: initial value 8.4 +- 1.4 on every frame (0.36 +- 0.06 here), and
# the first updates went to shrinking it (value loss 40-50, approx. KL 0.04-0.1). See benchmarks/HISTORY.md.
_HIDDEN = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform")
_POLICY = nn.initializers.orthogonal(0.01)
_VALUE = nn.initializers.orthogonal(1.0)


class _Recorder:
    """Collects named activations in forward order, changed by ``perturb[name]`` where one is given: an array is
    added (a delta), a function ``acts -> acts`` replaces the activation (an intervention's edit).

    The network goes on from the returned (perturbed) value, so a gradient with respect to a perturbation is the
    gradient with respect to that activation (attribution to intermediate layers).
    """

    def __init__(self, perturb: Mapping[str, jax.Array | Callable] | None) -> None:
        self.perturb = perturb or {}
        self.acts: dict[str, jax.Array] = {}

    def __call__(self, name: str, value: jax.Array) -> jax.Array:
        if name in self.perturb:
            edit = self.perturb[name]
            value = edit(value) if callable(edit) else value + edit
        self.acts[name] = value
        return value

    def relu(self, name: str, value: jax.Array) -> jax.Array:
        """Record ``value`` and its relu (the relu is what the network uses next)."""
        return self(name + ".relu", nn.relu(self(name, value)))


def _conv(features: int, size: int, padding: int, name: str) -> Conv:
    return Conv(features, size, padding, kernel_init=_HIDDEN, name=name)


def _impala_stage(rec: _Recorder, x: jax.Array, prefix: str, names: tuple[str, ...], ch: int) -> jax.Array:
    """conv 3x3 -> max-pool 3x3/2 -> two residual blocks ``x + conv_b(relu(conv_a(relu(x))))``.

    ``names`` = (conv, pool, block0, block1, block conv a, block conv b) in the checkpoint's naming.
    """
    conv, pool, blocks, (ca, cb) = names[0], names[1], names[2:4], names[4:6]
    x = rec(f"{prefix}.{conv}", _conv(ch, 3, 1, f"{prefix}.{conv}")(x))
    x, x_name = rec(f"{prefix}.{pool}", max_pool(x)), f"{prefix}.{pool}"
    for b in blocks:
        p = f"{prefix}.{b}"
        # Each residual block starts with a relu of its input: record it under the input's name.
        h = _conv(ch, 3, 1, f"{p}.{ca}")(rec(f"{x_name}.relu", nn.relu(x)))
        h = _conv(ch, 3, 1, f"{p}.{cb}")(rec.relu(f"{p}.{ca}", h))
        x, x_name = rec(p, x + rec(f"{p}.{cb}", h)), p
    return rec(prefix, x)


def _heads(rec: _Recorder, h: jax.Array, num_actions: int, logits: str, value: str) -> dict[str, jax.Array]:
    rec(logits, nn.Dense(num_actions, kernel_init=_POLICY, name=logits)(h))
    rec(value, nn.Dense(1, kernel_init=_VALUE, name=value)(h))
    return rec.acts


def _impala(rec: _Recorder, x: jax.Array, channels, stage, names: tuple[str, ...], fc: str) -> jax.Array:
    """The IMPALA trunk: stages, relu, flatten, dense 256, relu (``stage(i)`` names stage ``i``)."""
    for i, ch in enumerate(channels):
        x = _impala_stage(rec, x, stage(i), names, ch)
    # The network applies relu to the last stage's output before flattening.
    x = rec(f"{stage(len(channels) - 1)}.relu", nn.relu(x))
    return rec.relu(fc, nn.Dense(256, kernel_init=_HIDDEN, name=fc)(_flatten(x)))


class ImpalaCNN(nn.Module):
    """pfrl's IMPALA CNN (train-procgen-pfrl): ``conv_seqs.{i}``, ``hidden_fc``, ``logits_fc``, ``value_fc``."""

    num_actions: int = 15
    channels: tuple[int, ...] = (16, 32, 32)

    @nn.compact
    def __call__(self, x: jax.Array, perturb: Mapping[str, jax.Array] | None = None) -> dict[str, jax.Array]:
        rec = _Recorder(perturb)
        names = ("conv", "max_pool2d", "res_block0", "res_block1", "conv0", "conv1")
        h = _impala(rec, x, self.channels, lambda i: f"conv_seqs.{i}", names, "hidden_fc")
        return _heads(rec, h, self.num_actions, "logits_fc", "value_fc")


class ProcgenToolsImpala(nn.Module):
    """The same network in train-procgen-pytorch / procgen-tools layout: ``embedder.block{1,2,3}``, ``fc_policy``.

    ``embedder.block{i}.max_pool`` names the functional max-pool there (no torch module, so no hook).
    """

    num_actions: int = 15
    channels: tuple[int, ...] = (16, 32, 32)

    @nn.compact
    def __call__(self, x: jax.Array, perturb: Mapping[str, jax.Array] | None = None) -> dict[str, jax.Array]:
        rec = _Recorder(perturb)
        names = ("conv", "max_pool", "res1", "res2", "conv1", "conv2")
        h = _impala(rec, x, self.channels, lambda i: f"embedder.block{i + 1}", names, "embedder.fc")
        h = rec("embedder", h)  # the embedder's output: its post-relu fc
        return _heads(rec, h, self.num_actions, "fc_policy", "fc_value")


class InterpretableCNN(nn.Module):
    """The 4-stage CNN of recent Heist interpretability work: 7x7 and 5x5 convs, L2 pooling, three dense layers."""

    num_actions: int = 15

    @nn.compact
    def __call__(self, x: jax.Array, perturb: Mapping[str, jax.Array] | None = None) -> dict[str, jax.Array]:
        rec = _Recorder(perturb)
        stages = ((("conv1a", 16, 7, 3),), (("conv2a", 32, 5, 2), ("conv2b", 32, 5, 2)))
        stages += ((("conv3a", 32, 5, 2),), (("conv4a", 32, 5, 2),))
        for i, convs in enumerate(stages):
            for name, ch, size, pad in convs:
                x = rec.relu(name, _conv(ch, size, pad, name)(x))
            x = rec(f"pool{i + 1}", lp_pool(x))
        h = rec.relu("fc1", nn.Dense(256, kernel_init=_HIDDEN, name="fc1")(_flatten(x)))
        h = rec.relu("fc2", nn.Dense(512, kernel_init=_HIDDEN, name="fc2")(h))
        return _heads(rec, h, self.num_actions, "fc3", "value_fc")


def _flatten(x: jax.Array) -> jax.Array:
    return x.reshape(x.shape[0], -1)


@dataclasses.dataclass(frozen=True)
class Architecture:
    """What jaxinterp knows about one supported architecture: how to build it and how torch names it."""

    name: str
    description: str
    build: Callable[..., nn.Module]
    logits: str  # layer holding the action logits
    value: str  # layer holding the value, shape (N, 1)
    flatten_dense: str  # the dense layer after the flatten: torch flattens CHW, we flatten HWC
    signature: str  # a torch state-dict key only this layout has
    # Each stage's output at its own resolution: the layers `jaxinterp report` describes unless told others.
    stage_outputs: tuple[str, ...]


ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture(
            "impala",
            "pfrl IMPALA CNN (conv_seqs.*, hidden_fc, logits_fc, value_fc)",
            ImpalaCNN,
            "logits_fc",
            "value_fc",
            "hidden_fc",
            "conv_seqs.0.conv.weight",
            ("conv_seqs.0.res_block1", "conv_seqs.1.res_block1", "conv_seqs.2.res_block1"),
        ),
        Architecture(
            "impala-procgen-tools",
            "IMPALA CNN in train-procgen-pytorch/procgen-tools layout (embedder.block*, fc_policy, fc_value)",
            ProcgenToolsImpala,
            "fc_policy",
            "fc_value",
            "embedder.fc",
            "embedder.block1.conv.weight",
            ("embedder.block1.res2", "embedder.block2.res2", "embedder.block3.res2"),
        ),
        Architecture(
            "interpretable-cnn",
            "4-stage interpretable CNN (conv1a..conv4a, pool1..4, fc1..fc3, value_fc)",
            InterpretableCNN,
            "fc3",
            "value_fc",
            "fc1",
            "conv1a.weight",
            ("conv2b", "conv3a", "conv4a"),
        ),
    )
}


def activation_shapes(module: nn.Module, params=None) -> dict[str, tuple[int, ...]]:
    """Each named activation's shape for one 64x64 frame (no batch axis), in forward order (no FLOPs spent)."""
    order: list[str] = []

    def forward(params, x):
        acts = (
            module.apply({"params": params}, x)
            if params is not None
            else module.init_with_output(jax.random.key(0), x)[0]
        )
        order.extend(acts)  # eval_shape hands dicts back with sorted keys: remember the forward order
        return acts

    shapes = jax.eval_shape(forward, params, jax.ShapeDtypeStruct((1, 64, 64, 3), jax.numpy.float32))
    return {k: tuple(shapes[k].shape[1:]) for k in order}


def get_architecture(name: str) -> Architecture:
    """The ``Architecture`` called ``name``; an unknown name fails listing the known ones."""
    if name not in ARCHITECTURES:
        raise JaxinterpError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def init_params(arch: Architecture, key: jax.Array | None = None, **kwargs) -> dict:
    """Freshly initialized Flax params of ``arch`` built with ``kwargs`` (the ``params`` collection)."""
    key = jax.random.key(0) if key is None else key
    return _init(key, arch=arch, kwargs=tuple(sorted(kwargs.items())))


@functools.partial(jax.jit, static_argnames=("arch", "kwargs"))
def _init(key: jax.Array, *, arch: Architecture, kwargs: tuple) -> dict:
    """``init`` as one compiled program: run eagerly, Flax's init compiles ~130 small ops one by one (4 s on a 2-core
    CPU), against one compile that the on-disk cache keeps."""
    module = arch.build(**dict(kwargs))
    return module.init(key, jnp.zeros((1, 64, 64, 3), jnp.float32))["params"]
