"""``Agent``: an architecture plus its params, with the pure functions underneath for jit/vmap/grad by users."""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from jaxinterp.errors import JaxinterpError
from jaxinterp.models.impala import Architecture, activation_shapes, get_architecture, init_params

__all__ = [
    "CPU_PASS_SIZE",
    "DATA",
    "OBS_SHAPE",
    "ROWS",
    "Agent",
    "array_digest",
    "check_obs",
    "data_mesh",
    "in_device_passes",
    "in_passes",
    "pad_rows",
    "parse_channels",
    "pass_size",
    "policy_kl",
    "preprocess",
    "shard_rows",
]

OBS_SHAPE = (64, 64, 3)


@jax.tree_util.register_pytree_node_class
class Agent:
    """A Procgen agent network: ``logits, value = agent(obs)`` on uint8 frames (N, 64, 64, 3).

    ``agent.forward(params, images)`` is the pure function underneath: images in [0, 1] (the agent's own input
    scaling is ``obs / 255``) to ``{layer name: NHWC activation}``; ``agent.apply(params, obs)`` gives
    ``(logits, value)``. Both are safe to ``jit``, ``vmap`` and ``grad``.

    An ``Agent`` is a pytree: its params are the leaves, its architecture the static part. So jitted functions
    take the agent as an ordinary argument, and one compiled program serves every agent of an architecture (the
    one compile-cache pattern of jaxinterp: ``functools.partial(jax.jit, static_argnames=...)`` at module level).
    """

    def __init__(self, arch: Architecture | str, params: dict, *, num_actions: int, channels=None):
        self.arch = get_architecture(arch) if isinstance(arch, str) else arch
        self.params = params
        self.num_actions = num_actions
        self.build_kwargs = _build_kwargs(num_actions, channels)
        self.module = self.arch.build(**self.build_kwargs)

    @classmethod
    def random(
        cls, arch: Architecture | str = "impala", seed: int = 0, *, num_actions: int = 15, channels=None
    ) -> Agent:
        """A freshly initialized agent: the untrained control to compare any interpretability result against."""
        arch = get_architecture(arch) if isinstance(arch, str) else arch
        params = init_params(arch, jax.random.key(seed), **_build_kwargs(num_actions, channels))
        return cls(arch, params, num_actions=num_actions, channels=channels)

    def tree_flatten(self):
        return (self.params,), (self.arch, self.num_actions, self.build_kwargs.get("channels"))

    @classmethod
    def tree_unflatten(cls, static, leaves) -> Agent:
        arch, num_actions, channels = static
        return cls(arch, leaves[0], num_actions=num_actions, channels=channels)

    def replace(self, params: dict) -> Agent:
        """The same network with ``params`` (e.g. a training run's, or traced ones inside a transformation)."""
        return Agent.tree_unflatten(self.tree_flatten()[1], (params,))

    def __repr__(self) -> str:
        return f"Agent({self.arch.name!r}, num_actions={self.num_actions}, params={self.num_params:,})"

    @property
    def num_params(self) -> int:
        return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(self.params))

    def params_digest(self) -> str:
        """16 hex digits identifying the weights: outputs and caches computed from them record it."""
        return array_digest(jax.tree.leaves(self.params))

    def forward(self, params: dict, images: jax.Array, perturb: dict | None = None) -> dict[str, jax.Array]:
        """Every named activation for images in [0, 1], shape (N, 64, 64, 3).

        ``perturb`` maps layer names to deltas added to those activations, or to functions ``acts -> acts`` that
        replace them (interventions); the network carries on from there, so the gradient with respect to a delta
        is the gradient with respect to that activation.
        """
        if perturb:
            self.check_layers(perturb)
        return self.module.apply({"params": params}, images, perturb)

    def forward_from(
        self, params: dict, layer: str, acts: jax.Array, perturb: dict | None = None
    ) -> dict[str, jax.Array]:
        """The network from ``layer`` on, given that layer's activation ``acts`` (N, ...), with ``perturb`` as in
        `forward` at that layer and after: XLA drops the network before it (its input is never read)."""
        perturb = dict(perturb or {})
        then = perturb.get(layer, lambda a: a)
        perturb[layer] = (lambda _: then(acts)) if callable(then) else (lambda _: acts + then)
        blank = jnp.zeros((acts.shape[0], *OBS_SHAPE), jnp.float32)
        return self.forward(params, blank, perturb)

    def apply(self, params: dict, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(logits (N, A), value (N,)) for uint8 frames (N, 64, 64, 3)."""
        acts = self.forward(params, preprocess(obs))
        return acts[self.arch.logits], acts[self.arch.value][:, 0]

    @functools.cached_property
    def layer_shapes(self) -> dict[str, tuple[int, ...]]:
        """Each layer's activation shape for one frame (without the batch axis), in forward order."""
        return activation_shapes(self.module, self.params)

    @property
    def layer_names(self) -> list[str]:
        return list(self.layer_shapes)

    @property
    def conv_layer_names(self) -> list[str]:
        """Layers with a spatial (H, W, C) activation."""
        return [k for k, s in self.layer_shapes.items() if len(s) == 3]

    def check_layers(self, names: Iterable[str]) -> tuple[str, ...]:
        """``names`` as a tuple, or a one-line error listing the valid layer names."""
        names = tuple(names)
        unknown = [n for n in names if n not in self.layer_shapes]
        if unknown:
            raise JaxinterpError(
                f"unknown layer {', '.join(map(repr, unknown))} for {self.arch.name}; "
                f"valid layers: {', '.join(self.layer_names)}"
            )
        return names

    def check_channel(self, layer: str, channel: int) -> int:
        n = self.layer_shapes[self.check_layers([layer])[0]][-1]
        if not 0 <= channel < n:
            raise JaxinterpError(
                f"channel {channel} is out of range for layer {layer!r}: it has channels 0-{n - 1}"
            )
        return channel

    def __call__(self, obs) -> tuple[jax.Array, jax.Array]:
        return _apply(self, check_obs(obs))

    def activations(self, obs, names: Sequence[str]) -> dict[str, jax.Array]:
        """``{name: activation}`` for uint8 frames, exactly what a torch forward hook returns (as NHWC)."""
        return _activations(self, check_obs(obs), self.check_layers(names))


def array_digest(arrays: Iterable) -> str:
    """16 hex digits of a SHA-1 over the arrays' shapes, dtypes and bytes."""
    h = hashlib.sha1()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(str((a.shape, a.dtype)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def _build_kwargs(num_actions: int, channels) -> dict:
    """The architecture's constructor arguments: channel widths only when they differ from its defaults."""
    return {"num_actions": num_actions} | ({"channels": tuple(channels)} if channels else {})


def parse_channels(spec: str | int | Sequence[int] | None, n: int, what: str = "the layer") -> list[int]:
    """Channel indices from ``"all"``, ``"3"``, ``"0-15"``, ``"1,4,9"`` or ``"0-3,8"`` (or ints), checked < n."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "all"):
        return list(range(n))
    if isinstance(spec, int | np.integer):
        items: list[int] = [int(spec)]
    elif isinstance(spec, str):
        items = []
        for part in spec.split(","):
            part = part.strip()
            m = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
            if m is None:
                raise JaxinterpError(
                    f"cannot read channels {spec!r}: {part!r} is not a number or a range; use e.g. all, 3, 0-15, 1,4,9"
                )
            lo, hi = int(m[1]), int(m[2] if m[2] is not None else m[1])
            if hi < lo:
                raise JaxinterpError(f"channel range {part!r} runs backwards; write it as {hi}-{lo}")
            items.extend(range(lo, hi + 1))
    else:
        items = [int(c) for c in spec]
    bad = [c for c in items if not 0 <= c < n]
    if bad:
        raise JaxinterpError(f"channel {bad[0]} is out of range for {what}: it has channels 0-{n - 1}")
    if not items:
        raise JaxinterpError(f"no channels in {spec!r}; use e.g. all, 3, 0-15, 1,4,9")
    return list(dict.fromkeys(items))


CPU_PASS_SIZE = 32
"""Frames per network pass on CPU: XLA:CPU's convolutions run up to 2x faster per frame on batches of 32 than
of 512 (`benchmarks/bench_ppo_step.py`: the working set outgrows the caches)."""


def pass_size(batch: int, size: int | None = None) -> int:
    """Rows per pass for ``batch`` rows: ``size`` (None: `CPU_PASS_SIZE` on CPU, one pass on accelerators), or
    one pass when it does not divide ``batch``."""
    if size is None:
        size = CPU_PASS_SIZE if jax.default_backend() == "cpu" else batch
    return size if batch % size == 0 else batch


def in_passes(fn: Callable, x: jax.Array, size: int | None = None):
    """``fn(x)`` over the leading axis in passes of `pass_size` rows (a ``lax.map``), outputs joined again."""
    rows = pass_size(x.shape[0], size)
    out = jax.lax.map(fn, x.reshape(-1, rows, *x.shape[1:]))
    return jax.tree.map(lambda y: y.reshape(-1, *y.shape[2:]), out)


def pad_rows(size: int, arrays: Sequence, fill=0) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """``arrays`` (equal leading axes of at most ``size`` rows) padded with ``fill`` to ``size`` rows, and the mask
    of the real rows: every batch gets one shape, so one compilation serves a whole stream."""
    n = len(arrays[0])
    padded = tuple(
        np.concatenate([a, np.full((size - n, *a.shape[1:]), fill, a.dtype)]) if n < size else np.asarray(a)
        for a in map(np.asarray, arrays)
    )
    return padded, np.arange(size) < n


DATA = "data"  # the mesh axis that batches are split over (data parallel)
ROWS = PartitionSpec(DATA)  # arrays split along their leading axis over the devices


def data_mesh(shares: int, devices: int | None = None, what: str = "passes") -> Mesh:
    """A 1-D mesh of the local devices that take equal numbers of ``shares`` (indivisible units of work):
    ``devices`` of them, or with None the most that divide ``shares``."""
    local = jax.local_devices()
    n = devices or max(d for d in range(1, len(local) + 1) if shares % d == 0)
    if n > len(local) or shares % n:
        raise JaxinterpError(
            f"cannot split {shares} {what} evenly over {n} devices ({len(local)} local); "
            "pick a devices count that divides them, or leave it unset"
        )
    return Mesh(np.asarray(local[:n], dtype=object), (DATA,))


def shard_rows(fn: Callable, mesh: Mesh, out_specs: PartitionSpec = ROWS) -> Callable:
    """``fn(params, rows)`` run on each device of ``mesh`` with its share of the rows and the same params; its
    outputs are rows again, or with ``out_specs=PartitionSpec()`` the same on every device (sums over devices).

    ``check_vma`` is off because the custom-VJP convolution's weight gradient is per device until ``fn`` sums it.
    """
    return jax.shard_map(
        fn, mesh=mesh, in_specs=(PartitionSpec(), ROWS), out_specs=out_specs, check_vma=False
    )


def in_device_passes(fn: Callable, params, x: jax.Array, size: int | None = None, devices: int | None = None):
    """``fn(params, rows)`` over the leading axis of ``x``: its passes of `pass_size` rows shared out over the
    local devices (data parallel; see `data_mesh`), each device running its share pass by pass."""
    rows = pass_size(x.shape[0], size)
    mesh = data_mesh(x.shape[0] // rows, devices, f"passes of {rows} rows")
    return shard_rows(lambda p, xs: in_passes(lambda r: fn(p, r), xs, rows), mesh)(params, x)


def policy_kl(log_p: jax.Array, log_q: jax.Array) -> jax.Array:
    """KL(p || q) of two policies given as log-probabilities over the last axis (the clean policy first)."""
    return jnp.sum(jnp.exp(log_p) * (log_p - log_q), -1)


def preprocess(obs: jax.Array) -> jax.Array:
    """The agents' input scaling: uint8 frames to float32 in [0, 1]."""
    return obs.astype(jnp.float32) / 255.0


def check_obs(obs) -> jax.Array:
    """uint8 frames (N, 64, 64, 3), or a clear error saying what was wrong."""
    shape, dtype = np.shape(obs), getattr(obs, "dtype", None)
    if dtype != np.uint8:
        raise JaxinterpError(
            f"frames must be uint8 (N, 64, 64, 3) as procgen returns them, got dtype {dtype}; "
            "for float images in [0, 1] call agent.forward(agent.params, images)"
        )
    if len(shape) != 4 or tuple(shape[1:]) != OBS_SHAPE:
        raise JaxinterpError(f"frames must have shape (N, 64, 64, 3), got {tuple(shape)}")
    return jnp.asarray(obs)


@jax.jit
def _apply(agent: Agent, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
    return agent.apply(agent.params, obs)


@functools.partial(jax.jit, static_argnames="names")
def _activations(agent: Agent, obs: jax.Array, names: tuple[str, ...]) -> dict[str, jax.Array]:
    return {n: a for n, a in agent.forward(agent.params, preprocess(obs)).items() if n in names}
