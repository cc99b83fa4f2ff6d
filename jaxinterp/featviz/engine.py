"""The feature-visualization optimizer: one jitted ``lax.scan`` of Adam steps, vmapped over channels and facets.

purejaxrl's shape: ``make_visualize(agent, objective, config) -> visualize(key, channels) -> Result``. Each job
(channel, facet) optimizes its own image; the channel is a traced index, so one compilation serves every channel
of a layer. Jobs are sharded over all devices (a ``Mesh`` over the channel axis; every process of a
``jax.distributed`` job runs the same call and gets the whole result) and chunked to fit memory. A job's random
numbers come from ``fold_in(fold_in(key, channel), facet)``, never from its place in a batch, so chunking and
sharding do not change the images (beyond float rounding of differently sized batches).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from jaxinterp.errors import JaxinterpError
from jaxinterp.featviz import param as param_lib
from jaxinterp.featviz import transforms as tf
from jaxinterp.featviz.context import Context
from jaxinterp.featviz.objectives import Objective, read_acts, resolve_layer
from jaxinterp.models.agent import Agent

__all__ = [
    "DEFAULT_LR",
    "DEFAULT_MEMORY_BUDGET",
    "DEFAULT_STEPS",
    "MEMORY_FACTOR",
    "Result",
    "VisualizeConfig",
    "Visualizer",
    "bytes_per_image",
    "make_visualize",
]

DEFAULT_STEPS = 512
"""lucid's default number of steps (on a random-weight impala, channel values still rose from step 256 to 512)."""

DEFAULT_LR = 0.05
"""lucid's Adam learning rate for FFT-parameterized, decorrelated images (param.py keeps its scaling)."""

DEFAULT_MEMORY_BUDGET = 2 << 30
"""Bytes that one chunk of jobs may use for activations (estimated, see `bytes_per_image`): 2 GiB."""

MEMORY_FACTOR = 4
"""Floats held per activation float in a step: the forward value kept for the backward pass, its gradient and
about two more of workspace. Deliberately generous: XLA's own temp buffers measured 2-4x below this estimate
(impala, 32 channels: conv_seqs.0.conv 0.83 MB/image vs 1.8 estimated; conv_seqs.2.res_block1 2.0 vs 7.6)."""

_AXIS = "jobs"


@dataclasses.dataclass(frozen=True)
class VisualizeConfig:
    """Settings for `make_visualize`; frozen and hashable, so equal configs can share compiled functions."""

    steps: int = DEFAULT_STEPS
    thresholds: tuple[int, ...] = ()
    """Step counts at which to keep images as well as the last (0: the starting image)."""
    facets: int = 1
    """Images per channel (K); objectives see a channel's K facets as one batch (for `diversity`)."""
    lr: float = DEFAULT_LR
    optimizer: optax.GradientTransformation | None = None
    """Overrides ``optax.adam(lr)``."""
    param: param_lib.ImageParam | None = None
    """Image parameterization; default ``param.image()`` (FFT basis, ImageNet colour decorrelation, sigmoid).
    Its params' leaves must have the batch as their first axis, as ``param.pixel`` and ``param.fft`` do."""
    transforms: tf.Transform | None = dataclasses.field(default_factory=tf.standard_transforms)
    """Random transforms applied to the image before the network each step; None for none."""
    context: Context | None = None
    """Optimize a patch pasted into real frames (`jaxinterp.featviz.context`) instead of a whole image: ``param``
    must make patches of the context's size, and ``transforms`` must be None (the context shifts the patch)."""
    measure: Objective | None = None
    """What ``Result.values`` reports on the final (untransformed) images; default the objective itself. Pass
    the objective without its penalties to compare images with real frames."""
    max_images: int | None = None
    """Images (channels × facets) optimized at once; default from `memory_budget`."""
    memory_budget: int = DEFAULT_MEMORY_BUDGET
    scan: bool = True
    """True: all steps in one `lax.scan`. False: a host loop over the jitted step (for comparison)."""
    devices: tuple[Any, ...] | None = None
    """Devices to shard jobs over; default all devices of the job (``jax.devices()``, every process)."""
    compiler_options: tuple[tuple[str, Any], ...] = ()
    """XLA options for this job's programs, e.g. ``(("xla_backend_optimization_level", 0),)``: compiles ~3x
    faster on CPU but runs slower, worth it only for runs of a few dozen steps (tests, quick looks)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "thresholds", tuple(int(t) for t in self.thresholds))
        if self.devices is not None:
            object.__setattr__(self, "devices", tuple(self.devices))
        options = self.compiler_options
        object.__setattr__(
            self, "compiler_options", tuple(options.items() if isinstance(options, dict) else options)
        )
        if self.context is not None and self.transforms is not None:
            raise JaxinterpError(
                "a context pastes the patch into real frames with its own jitter; pass transforms=None with it"
            )
        if not isinstance(self.steps, int) or self.steps < 1:
            raise JaxinterpError(f"`steps` (={self.steps!r}) must be an int >= 1")
        bad = [t for t in self.thresholds if not 0 <= t <= self.steps]
        if bad:
            raise JaxinterpError(f"`thresholds` {bad} must lie in 0-{self.steps} (the number of steps)")
        if not isinstance(self.facets, int) or self.facets < 1:
            raise JaxinterpError(f"`facets` (={self.facets!r}) must be an int >= 1")
        if not self.lr > 0:
            raise JaxinterpError(f"`lr` (={self.lr!r}) must be > 0")
        if self.max_images is not None and self.max_images < 1:
            raise JaxinterpError(f"`max_images` (={self.max_images!r}) must be >= 1")
        if self.memory_budget < 1:
            raise JaxinterpError(
                f"`memory_budget` (={self.memory_budget!r}) must be a positive number of bytes"
            )

    @property
    def kept(self) -> tuple[int, ...]:
        """The step counts whose images are returned: `thresholds` and `steps`, sorted."""
        return tuple(sorted({*self.thresholds, self.steps}))


class Result(NamedTuple):
    """The images each job reached at each kept step count, and what they score."""

    images: np.ndarray
    """(T, C, K, H, W, 3) float32 in [0, 1]: T kept step counts, C channels, K facets; 64×64 images, or a
    context's patches."""
    values: np.ndarray
    """(T, C, K): the measure (default the objective) on each kept image, untransformed."""
    losses: np.ndarray
    """(C, K, steps): minus the objective on the transformed image at each step (what Adam minimized)."""
    channels: np.ndarray
    """(C,) the channel (index) of each row."""
    thresholds: tuple[int, ...]
    """The T step counts."""

    @property
    def final(self) -> np.ndarray:
        """The last images, (C, K, H, W, 3)."""
        return self.images[-1]

    def at(self, step: int) -> np.ndarray:
        """Images (C, K, H, W, 3) after `step` steps (one of `thresholds`)."""
        if step not in self.thresholds:
            raise JaxinterpError(f"no images kept at step {step}; kept: {list(self.thresholds)}")
        return self.images[self.thresholds.index(step)]


class _State(NamedTuple):
    params: Any  # image params, leaves (K, ...)
    opt_state: Any
    saved: Any  # image params at each kept step count, leaves (T + 1, K, ...): slot T takes other steps
    step: jax.Array  # int32: steps done
    step_keys: jax.Array  # (K,) typed keys: transform draws for step t fold t in


class _Program(NamedTuple):
    """What fixes a chunk's compiled program besides the shapes: the static argument of the jitted job functions.

    Hashable, so visualizers with an equal config and the same objective share compiled programs, whatever the
    agent's weights (they and the context's frames are arguments). ``param`` and ``optimizer`` None stand for
    the defaults, built while tracing, so that equal configs stay equal programs."""

    objective: Objective
    measure: Objective
    param: param_lib.ImageParam | None
    optimizer: optax.GradientTransformation | None
    lr: float
    transforms: tf.Transform | None
    steps: int
    kept: tuple[int, ...]
    facets: int
    impl: str  # the PRNG implementation of the jobs' key data
    mesh: Mesh

    @property
    def image_param(self) -> param_lib.ImageParam:
        return self.param if self.param is not None else param_lib.image()

    @property
    def tx(self) -> optax.GradientTransformation:
        return self.optimizer if self.optimizer is not None else optax.adam(self.lr)


def bytes_per_image(agent: Agent, layers: Sequence[str]) -> int:
    """Estimated bytes one image needs in a step: every activation up to the deepest layer read, plus the image."""
    order = list(agent.layer_shapes)
    resolved = [resolve_layer(agent, n) for n in layers]
    deepest = max((order.index(n) for n in resolved), default=0)
    floats = sum(math.prod(agent.layer_shapes[n]) for n in order[: deepest + 1])
    # Image params, Adam moments, the saved copies and the transformed image: a handful of image-sized arrays.
    image_floats = 64 * 64 * 3 * 16
    return 4 * (MEMORY_FACTOR * floats + image_floats)


def _pick_device_rows(n: int, devices: int) -> int:
    return max(devices, n // devices * devices)


# --- one job: (channel index, K facet keys); ``shared`` is (agent, context or None) ----------------------------
def _init_job(program: _Program, index: jax.Array, key_data: jax.Array) -> _State:
    keys = jax.random.wrap_key_data(key_data, impl=program.impl)
    split = jax.vmap(jax.random.split)(keys)  # (K, 2)
    init_keys, step_keys = split[:, 0], split[:, 1]
    # Each facet is initialized from its own key (not one key for the batch), so facet f is the same image
    # whatever K is; leaves come back (K, 1, ...) and merge into the batch axis the parameterization expects.
    params = jax.vmap(lambda key: program.image_param.init(key, 1))(init_keys)
    params = jax.tree.map(lambda x: x.reshape(program.facets, *x.shape[2:]), params)
    saved = jax.tree.map(lambda x: jnp.broadcast_to(x, (len(program.kept) + 1, *x.shape)), params)
    return _State(params, program.tx.init(params), saved, jnp.int32(0), step_keys)


def _score(program: _Program, shared, index, images: jax.Array, objective: Objective, keys=None) -> jax.Array:
    agent, context = shared  # the context travels as an argument: its frames are no constant
    if context is not None:
        # Activations come from the frames holding the patches, penalties (tv, l2, ...) see the patches.
        seen = context.paste(images, keys)
        reps = seen.shape[0] // images.shape[0]
        acts = read_acts(agent, agent.forward(agent.params, seen), objective.layers)
        scores = objective.fn(acts, jnp.repeat(images, reps, axis=0), index)
        return scores.reshape(images.shape[0], reps).mean(axis=1)
    seen = images
    if keys is not None and program.transforms is not None:
        spec = program.transforms
        seen = jax.vmap(lambda key, im: tf.apply(key, im[None], spec)[0])(keys, images)
    acts = read_acts(agent, agent.forward(agent.params, seen), objective.layers)
    return objective.fn(acts, images, index)


def _step_job(program: _Program, shared, index: jax.Array, state: _State) -> tuple[_State, jax.Array]:
    keys = jax.vmap(jax.random.fold_in, (0, None))(state.step_keys, state.step)

    def loss_fn(p):
        score = _score(program, shared, index, program.image_param.apply(p), program.objective, keys)
        return -jnp.sum(score), score

    (_, score), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = program.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    step = state.step + 1
    kept = jnp.asarray(program.kept, jnp.int32)
    hit = kept == step
    slot = jnp.where(hit.any(), jnp.argmax(hit), len(program.kept))
    saved = jax.tree.map(lambda s, p: s.at[slot].set(p), state.saved, params)
    return _State(params, opt_state, saved, step, state.step_keys), -score


def _finish_job(program: _Program, shared, index: jax.Array, state: _State) -> tuple[jax.Array, jax.Array]:
    saved = jax.tree.map(lambda s: s[: len(program.kept)], state.saved)
    images = jax.vmap(program.image_param.apply)(saved)  # (T, K, H, W, 3)
    flat = images.reshape(-1, *images.shape[2:])
    values = _score(program, shared, index, flat, program.measure).reshape(images.shape[:2])
    return images, values


def _run_job(program: _Program, shared, index, key_data):
    state = _init_job(program, index, key_data)
    state, losses = jax.lax.scan(
        lambda s, _: _step_job(program, shared, index, s), state, None, length=program.steps
    )
    images, values = _finish_job(program, shared, index, state)
    return images, values, losses.T


# --- vmapped over the jobs of each device, sharded over devices, jitted ----------------------------------------
def _per_device(program: _Program, job: Callable, *, shared: bool = True) -> Callable:
    """``job`` vmapped over the jobs of a device inside a `jax.shard_map` over the program's mesh.

    shard_map, not the compiler's automatic partitioning: left to it, XLA replicated the FFT parameterization (an
    all-gather of every job's spectrum and the inverse FFT of all jobs on every device, each step), and in the host
    loop those collectives deadlocked XLA:CPU's rendezvous on 2 host devices. Here no step runs a collective;
    results come back sharded and the host gathers them (`Visualizer._host`)."""
    jobs, same = PartitionSpec(_AXIS), PartitionSpec()
    return jax.shard_map(
        jax.vmap(functools.partial(job, program), (None, 0, 0) if shared else (0, 0)),
        mesh=program.mesh,
        in_specs=(same, jobs, jobs) if shared else (jobs, jobs),
        out_specs=jobs,
        check_vma=False,  # the custom-VJP convolution is opaque to the check; nothing is reduced here
    )


def _run(shared, index, key_data, *, program: _Program):
    return _per_device(program, _run_job)(shared, index, key_data)


def _init(index, key_data, *, program: _Program):
    return _per_device(program, _init_job, shared=False)(index, key_data)


def _step(shared, index, state, *, program: _Program):
    return _per_device(program, _step_job)(shared, index, state)


def _finish(shared, index, state, *, program: _Program):
    return _per_device(program, _finish_job)(shared, index, state)


class _Jitted(NamedTuple):
    run: Callable  # all steps in one scan
    init: Callable  # the host loop's three parts
    step: Callable
    finish: Callable


@functools.cache
def _jitted(compiler_options: tuple[tuple[str, Any], ...]) -> _Jitted:
    """The job functions jitted with these XLA options, each compiling once per `_Program` and shapes.

    `jax.jit` takes compiler options when it wraps a function, not per call: one set of wrappers per distinct
    options (the default and the fast-compile one of tests and quick looks), not per agent or visualizer."""
    jit = functools.partial(
        jax.jit, static_argnames="program", compiler_options=dict(compiler_options) or None
    )
    return _Jitted(jit(_run), jit(_init), jit(_step, donate_argnums=2), jit(_finish))


class Visualizer:
    """``visualize(key, channels) -> Result``; built by `make_visualize`, reusable for any channels and seeds."""

    def __init__(self, agent: Agent, objective: Objective, config: VisualizeConfig):
        if not isinstance(objective, Objective):
            raise JaxinterpError(
                f"objective must be an Objective (see jaxinterp.featviz.objectives), got {type(objective).__name__}"
            )
        self.agent, self.objective, self.config = agent, objective.validate(agent), config
        self.measure = (config.measure or objective).validate(agent)
        self.devices = config.devices if config.devices is not None else tuple(jax.devices())
        self.mesh = Mesh(np.asarray(self.devices, dtype=object), (_AXIS,))
        self._sharded = NamedSharding(self.mesh, PartitionSpec(_AXIS))
        self._replicated = NamedSharding(self.mesh, PartitionSpec())
        layers = (*objective.layers, *self.measure.layers)
        self.image_bytes = bytes_per_image(agent, layers)
        if config.context is not None:  # each patch is seen in several frames at once
            self.image_bytes *= max(config.context.batch, config.context.measure_count)
        max_images = config.max_images or max(1, config.memory_budget // self.image_bytes)
        self.chunk_channels = _pick_device_rows(max(1, max_images // config.facets), len(self.devices))
        """Most channels optimized in one call (a multiple of the device count)."""
        self._shared = None

    def _program(self, impl: str) -> _Program:
        c = self.config
        return _Program(
            self.objective,
            self.measure,
            c.param,
            c.optimizer,
            c.lr,
            c.transforms,
            c.steps,
            c.kept,
            c.facets,
            impl,
            self.mesh,
        )

    @staticmethod
    def _host(x: jax.Array) -> np.ndarray:
        """A result on the host in full: gathered from the local shards, or from every process's."""
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)

    def _global(self, data: np.ndarray, sharding: NamedSharding) -> jax.Array:
        """A global array from data every process holds in full (one process: a plain device_put)."""
        data = np.asarray(data)
        return jax.make_array_from_callback(data.shape, sharding, lambda idx: data[idx])

    def _shared_inputs(self):
        """(agent, context or None) on every device: what each job reads besides its own state."""
        if self._shared is None:
            self._shared = jax.tree.map(
                lambda x: self._global(x, self._replicated), (self.agent, self.config.context)
            )
        return self._shared

    def channels_for(self, channels: Sequence[int] | int | None) -> np.ndarray:
        """Checked channel indices as an int32 array; None means every index (or [0] if the objective has none)."""
        if channels is None:
            n = self.objective.num_indices(self.agent)
            channels = range(n) if n is not None else [0]
        elif isinstance(channels, int | np.integer):
            channels = [int(channels)]
        channels = [int(c) for c in channels]
        if not channels:
            raise JaxinterpError("no channels to visualize: pass at least one channel index")
        for c in channels:
            self.objective.check_index(self.agent, c)
            self.measure.check_index(self.agent, c)
        return np.asarray(channels, np.int32)

    def job_keys(self, key: jax.Array, channels: np.ndarray) -> np.ndarray:
        """Key data (C, K, ...) of each job: ``fold_in(fold_in(key, channel), facet)``."""
        facets = jnp.arange(self.config.facets)

        def per_channel(c):
            return jax.vmap(lambda f: jax.random.fold_in(jax.random.fold_in(key, c), f))(facets)

        return np.asarray(jax.random.key_data(jax.vmap(per_channel)(jnp.asarray(channels))))

    def __call__(
        self,
        key: jax.Array | int,
        channels: Sequence[int] | int | None = None,
        *,
        bar: tqdm | None = None,
    ) -> Result:
        """Optimize ``facets`` images for each of ``channels`` (indices of the objective family).

        A caller's progress ``bar`` advances by the channels of each chunk as it finishes.
        """
        key = jax.random.key(key) if isinstance(key, int | np.integer) else key
        if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            key = jax.random.wrap_key_data(key)  # a legacy uint32 key
        impl = str(jax.random.key_impl(key))
        channels = self.channels_for(channels)
        all_keys = self.job_keys(key, channels)
        n_dev = len(self.devices)
        size = min(self.chunk_channels, -(-len(channels) // n_dev) * n_dev)
        parts = []
        for start in range(0, len(channels), size):
            index, keys = channels[start : start + size], all_keys[start : start + size]
            real = len(index)
            # Pad with copies of the last job (same key, same image) so every chunk has one shape: one compile.
            pad = size - real
            index = np.concatenate([index, np.repeat(index[-1:], pad)])
            keys = np.concatenate([keys, np.repeat(keys[-1:], pad, axis=0)])
            images, values, losses = self._run_chunk(impl, index, keys)
            parts.append((images[:real], values[:real], losses[:real]))
            self._check_finite(channels[start : start + real], *parts[-1])
            if bar is not None:
                bar.update(real)
        images, values, losses = (np.concatenate(x) for x in zip(*parts, strict=True))
        return Result(
            images=np.moveaxis(images, 1, 0),
            values=np.moveaxis(values, 1, 0),
            losses=losses,
            channels=channels,
            thresholds=self.config.kept,
        )

    def _run_chunk(self, impl: str, index: np.ndarray, keys: np.ndarray):
        fns, program = _jitted(self.config.compiler_options), self._program(impl)
        shared = self._shared_inputs()
        index_g, keys_g = self._global(index, self._sharded), self._global(keys, self._sharded)
        if self.config.scan:
            out = fns.run(shared, index_g, keys_g, program=program)
            return tuple(self._host(x) for x in out)
        state = fns.init(index_g, keys_g, program=program)
        losses = []
        for _ in range(self.config.steps):
            state, loss = fns.step(shared, index_g, state, program=program)
            losses.append(loss)
        images, values = fns.finish(shared, index_g, state, program=program)
        return self._host(images), self._host(values), np.stack([self._host(x) for x in losses], axis=-1)

    def _check_finite(self, channels: np.ndarray, images, values, losses) -> None:
        bad = ~(
            np.isfinite(images).reshape(len(channels), -1).all(1)
            & np.isfinite(values).reshape(len(channels), -1).all(1)
            & np.isfinite(losses).reshape(len(channels), -1).all(1)
        )
        if bad.any():
            which = ", ".join(str(c) for c in channels[bad][:8])
            raise JaxinterpError(
                f"optimizing {self.objective.describe(int(channels[bad][0]))} gave NaN/inf "
                f"(layer {', '.join(self.objective.layers) or 'input'}, channel(s) {which}); "
                f"lower the learning rate (lr={self.config.lr}) or add a penalty such as total_variation"
            )


def make_visualize(agent: Agent, objective: Objective, config: VisualizeConfig | None = None) -> Visualizer:
    """``visualize(key, channels) -> Result``: optimize images for ``objective`` at each channel index.

    ``objective`` is an `Objective` family (e.g. ``channel(layer)``) whose traced index is the channel, or a fixed
    objective (then ``channels`` defaults to ``[0]``, which it ignores). Compiles on first use per chunk size.
    """
    return Visualizer(agent, objective, config or VisualizeConfig())
