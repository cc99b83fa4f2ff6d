"""Training SAEs, many at once: ``make_train(config)`` gives a jitted step that is vmapped over a sweep's members
(stacked params, per-member k, coefficient and learning rate) and scanned over a block of batches.

Members that share the static settings (`SAEConfig.static`) are one *group* and one compiled program; a sweep of
several architectures or widths trains its groups side by side on the same batches. The member axis is sharded
over the local devices. `train_sweep` drives the groups with orbax checkpoints, resumes exactly, and shows
progress with loss, L0, FVU and the dead fraction.
"""

from __future__ import annotations

import functools
import json
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jaxinterp.atomic import atomic_path, write_text
from jaxinterp.errors import JaxinterpError
from jaxinterp.models.agent import ROWS, data_mesh
from jaxinterp.progress import bar as progress_bar
from jaxinterp.sae.config import BATCH_TOPK, SAEConfig
from jaxinterp.sae.data import ActivationSource, geometric_median, input_scale
from jaxinterp.sae.model import Hyper, SAEParams, Terms, hyper_of, init_params, loss

__all__ = [
    "BLOCK",
    "CHECKPOINT",
    "LOG_FILE",
    "MEDIAN_SAMPLES",
    "SINCE_CAP",
    "SWEEP_FILE",
    "SweepResult",
    "TrainState",
    "Trainer",
    "group_configs",
    "lr_schedule",
    "make_train",
    "since_fired",
    "stack_hypers",
    "train_sweep",
]

SINCE_CAP = 2**30  # samples-since-fired saturates here (int32)
MEDIAN_SAMPLES = 16384  # samples for the geometric median and the input scale
BLOCK = 16  # batches per call of the compiled step (a lax.scan): dispatch is paid once per block


class TrainState(NamedTuple):
    """One member's training state (a sweep stacks these along a leading member axis)."""

    params: SAEParams
    opt_state: optax.OptState
    since_fired: jax.Array  # (d_sae,) int32 samples since each latent last fired
    step: jax.Array  # int32


class Trainer(NamedTuple):
    """``init(keys (M,), b_dec) -> states``; ``update(states, hypers, xs (T, B, d_in)) -> (states, terms (M, T))``."""

    config: SAEConfig
    init: Callable
    update: Callable


def lr_schedule(config: SAEConfig) -> optax.Schedule:
    """Linear warm-up to 1, constant, then a linear decay to 0 over the last ``decay_fraction`` of the steps
    (multiplied by each member's own learning rate)."""
    decay_steps = int(config.steps * config.decay_fraction)
    flat = max(config.steps - config.warmup_steps - decay_steps, 0)
    return optax.join_schedules(
        [
            optax.linear_schedule(0.0, 1.0, max(config.warmup_steps, 1)),
            optax.constant_schedule(1.0),
            optax.linear_schedule(1.0, 0.0, max(decay_steps, 1)),
        ],
        [max(config.warmup_steps, 1), max(config.warmup_steps, 1) + flat],
    )


def _optimizer(config: SAEConfig) -> optax.GradientTransformation:
    schedule = lr_schedule(config)
    return optax.chain(
        optax.clip_by_global_norm(config.max_grad_norm),
        optax.scale_by_adam(),
        optax.scale_by_schedule(lambda s: -schedule(s)),
    )


def _unit_rows(w: jax.Array) -> jax.Array:
    return w / jnp.maximum(jnp.linalg.norm(w, axis=1, keepdims=True), 1e-12)


def _unit_decoder(config: SAEConfig) -> bool:
    return config.arch != "relu"  # relu keeps free norms and weights its L1 by them


def _init_one(config: SAEConfig, key: jax.Array, b_dec: jax.Array) -> TrainState:
    params = init_params(config, key, b_dec)
    since = jnp.zeros(config.width, jnp.int32)
    return TrainState(params, _optimizer(config).init(params), since, jnp.int32(0))


def _constrain_grads(config: SAEConfig, params: SAEParams, grads: SAEParams) -> SAEParams:
    """The gradient without the parts the architecture keeps fixed."""
    if _unit_decoder(config):  # keep the rows on the unit sphere: drop the gradient's radial part
        w = params.W_dec
        grads = grads._replace(W_dec=grads.W_dec - jnp.sum(grads.W_dec * w, 1, keepdims=True) * w)
    if config.arch != "jumprelu":
        grads = grads._replace(threshold=jnp.zeros_like(grads.threshold))
    return grads


def _constrain_params(config: SAEConfig, step: jax.Array, params: SAEParams, terms: Terms) -> SAEParams:
    """Updated params put back where the architecture keeps them: unit decoder rows, thresholds."""
    if _unit_decoder(config):
        params = params._replace(W_dec=_unit_rows(params.W_dec))
    if config.arch == "jumprelu":
        params = params._replace(threshold=jnp.maximum(params.threshold, 0.0))
    if config.arch in BATCH_TOPK:  # the inference threshold: an EMA of the smallest activation kept
        old = params.threshold[0]
        new = jnp.where(
            step == 0,
            terms.kept_min,
            config.threshold_decay * old + (1 - config.threshold_decay) * terms.kept_min,
        )
        new = jnp.where(jnp.isfinite(new), new, old)
        params = params._replace(threshold=jnp.full_like(params.threshold, new))
    return params


def _step_one(config: SAEConfig, state: TrainState, hyper: Hyper, x: jax.Array) -> tuple[TrainState, Terms]:
    """One member's step on one batch."""
    dead = state.since_fired >= config.dead_samples
    warm = jnp.clip((state.step + 1) / max(config.sparsity_warmup_steps, 1), 0.0, 1.0)
    grads, (z, terms) = jax.grad(lambda p: loss(config, p, x, hyper, dead, warm), has_aux=True)(state.params)
    grads = _constrain_grads(config, state.params, grads)
    updates, opt_state = _optimizer(config).update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, jax.tree.map(lambda u: hyper.lr * u, updates))
    params = _constrain_params(config, state.step, params, terms)
    return TrainState(params, opt_state, since_fired(state.since_fired, z), state.step + 1), terms


def since_fired(since: jax.Array, z: jax.Array) -> jax.Array:
    """Samples since each latent last fired, after a batch of latents ``z`` (B, d_sae): AuxK's dead counter."""
    return jnp.where(jnp.any(z > 0, axis=0), 0, jnp.minimum(since + z.shape[0], SINCE_CAP))


def _member_block(
    config: SAEConfig, state: TrainState, hyper: Hyper, xs: jax.Array
) -> tuple[TrainState, Terms]:
    """One member over a block of batches (a scan): its terms come out (T,)."""
    return jax.lax.scan(lambda carry, x: _step_one(config, carry, hyper, x), state, xs)


def _block(config: SAEConfig, member_pass: int | None, states, hypers, xs):
    """A device's members over a block of batches: in passes of ``member_pass`` members (see `make_train`)."""
    members = len(hypers.k)
    rows = member_pass or (1 if jax.default_backend() == "cpu" else members)
    # one member at a time, unbatched: its AuxK branch stays a branch (vmapped, both sides would run)
    if rows == 1:
        return jax.lax.map(lambda sh: _member_block(config, *sh, xs), (states, hypers))
    run = jax.vmap(functools.partial(_member_block, config), in_axes=(0, 0, None))
    if rows >= members or members % rows:
        return run(states, hypers, xs)
    # a lax.map over passes of `rows` members, each pass vmapped (see make_train)
    split = lambda t: t.reshape(members // rows, rows, *t.shape[1:])
    out = jax.lax.map(lambda sh: run(*sh, xs), jax.tree.map(split, (states, hypers)))
    return jax.tree.map(lambda t: t.reshape(members, *t.shape[2:]), out)


@functools.partial(jax.jit, static_argnames=("config", "mesh"))
def _init(keys: jax.Array, b_dec: jax.Array, *, config: SAEConfig, mesh: Mesh) -> TrainState:
    fn = jax.vmap(functools.partial(_init_one, config), in_axes=(0, None))
    return jax.shard_map(fn, mesh=mesh, in_specs=(ROWS, P()), out_specs=ROWS, check_vma=False)(keys, b_dec)


@functools.partial(jax.jit, static_argnames=("config", "mesh", "member_pass"))
def _update(states, hypers, xs, *, config: SAEConfig, mesh: Mesh, member_pass: int | None):
    fn = functools.partial(_block, config, member_pass)
    sharded = jax.shard_map(
        fn, mesh=mesh, in_specs=(ROWS, ROWS, P()), out_specs=(ROWS, ROWS), check_vma=False
    )
    return sharded(states, hypers, xs)


def make_train(config: SAEConfig, devices: int | None = None, member_pass: int | None = None) -> Trainer:
    """The group's init and update, compiled once per static config and member count. ``config`` fixes the static
    settings; the traced ones come per member in the ``hypers`` passed to ``update``.

    Inside the one compiled step each member scans the block of batches, and members run in passes of
    ``member_pass`` (a ``lax.map`` over passes, each pass vmapped); None: one member per pass on CPU, all in one
    pass on accelerators. XLA:CPU runs the batched matmuls of a vmapped step 3-5x slower than the same matmuls one
    member at a time (16 members 32 -> 256, batch 2048: encoder 152 vs 30 ms, gradient 414 vs 82 ms), so on CPU the
    members take turns within the program, each over the whole block (a map inside the scan over batches was 1.6x
    slower than that, slicing every member's state at every step). The members are sharded over ``devices``."""

    def init(keys: jax.Array, b_dec) -> TrainState:
        mesh = data_mesh(len(keys), devices, "SAEs")
        return _init(keys, jnp.asarray(b_dec, jnp.float32), config=config, mesh=mesh)

    def update(states: TrainState, hypers: Hyper, xs: jax.Array) -> tuple[TrainState, Terms]:
        mesh = data_mesh(len(hypers.k), devices, "SAEs")
        return _update(states, hypers, xs, config=config, mesh=mesh, member_pass=member_pass)

    return Trainer(config, init, update)


def stack_hypers(configs: Sequence[SAEConfig]) -> Hyper:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *[hyper_of(c) for c in configs])


def group_configs(configs: Sequence[SAEConfig]) -> list[list[int]]:
    """Member indices grouped by their static settings (one compiled step per group), in first-seen order."""
    groups: dict[tuple, list[int]] = {}
    for i, c in enumerate(configs):
        groups.setdefault(c.static(), []).append(i)
    return list(groups.values())


class SweepResult(NamedTuple):
    """Trained members in the order of their configs, in the scaled input space of training (see ``scale``)."""

    configs: list[SAEConfig]
    params: list[SAEParams]
    scale: float  # training saw ``activation * scale``; `files.export` folds it into the weights
    history: list[dict]


CHECKPOINT = "checkpoint"
SWEEP_FILE = "sweep.json"
LOG_FILE = "metrics.jsonl"


def train_sweep(
    configs: Sequence[SAEConfig],
    source: ActivationSource,
    out_dir: str | Path,
    *,
    data_seed: int = 0,
    checkpoint_every_s: float = 300.0,
    progress: bool = True,
    devices: int | None = None,
    log_every: int = 1,
) -> SweepResult:
    """Train every config on ``source``'s samples, the same batches for all, resuming from ``out_dir``.

    All configs must share ``d_in`` (the layer's width), ``steps`` and ``batch_size`` (they step together).
    Interruption (Ctrl-C, SIGTERM) saves the last whole block; rerunning the same call continues exactly.
    """
    configs = _check_configs(configs, source)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sample, _ = source.sample(MEDIAN_SAMPLES)
    scale = input_scale(sample)
    meta = {
        "layer": source.layer,
        "data_seed": data_seed,
        "configs": [c.to_dict() for c in configs],
        "scale": scale,
    }
    _check_sweep(out, meta)

    sweep = _Sweep.build(configs, devices)
    states = sweep.init(geometric_median(sample * scale))
    done = 0
    if (out / CHECKPOINT).exists():
        done, states = _load_checkpoint(out / CHECKPOINT, states)
    history = _read_log(out / LOG_FILE, done)
    batches = _Batches(source, data_seed, configs[0].batch_size, np.float32(scale))
    done, states = _train_blocks(
        sweep,
        states,
        done,
        history,
        batches,
        out,
        checkpoint_every_s=checkpoint_every_s,
        log_every=log_every,
        progress=progress,
    )
    params = sweep.member_params(states)
    if done < configs[0].steps:
        raise KeyboardInterrupt
    return SweepResult(configs, params, scale, history)


def _check_configs(configs: Sequence[SAEConfig], source: ActivationSource) -> list[SAEConfig]:
    """The configs as a list, checked to train together on ``source``."""
    configs = list(configs)
    if not configs:
        raise JaxinterpError("an SAE sweep needs at least one config")
    for c in configs:
        if c.d_in != source.d_in:
            raise JaxinterpError(
                f"an SAE with d_in={c.d_in} cannot train on {source.layer or 'this layer'}: its samples have "
                f"{source.d_in} channels"
            )
    if len({(c.steps, c.batch_size) for c in configs}) > 1:
        raise JaxinterpError(
            "every SAE of one sweep needs the same steps and batch_size (they share batches)"
        )
    return configs


class _Sweep(NamedTuple):
    """A sweep's members in groups of one compiled program: each group's member indices, trainer and hypers."""

    configs: list[SAEConfig]
    groups: list[list[int]]
    trainers: list[Trainer]
    hypers: list[Hyper]

    @classmethod
    def build(cls, configs: list[SAEConfig], devices: int | None) -> _Sweep:
        groups = group_configs(configs)
        trainers = [make_train(configs[g[0]], devices) for g in groups]
        return cls(configs, groups, trainers, [stack_hypers([configs[i] for i in g]) for g in groups])

    def init(self, b_dec: np.ndarray) -> list[TrainState]:
        """Each group's fresh states, every member from the key of its own seed."""
        return [
            t.init(jnp.stack([jax.random.key(self.configs[i].seed) for i in g]), b_dec)
            for t, g in zip(self.trainers, self.groups, strict=True)
        ]

    def update(self, states: list[TrainState], xs: jax.Array) -> tuple[list[TrainState], list[Terms]]:
        """Every group over one block of batches ``xs`` (T, B, d_in): new states, terms (members, T) per group."""
        out = [t.update(s, h, xs) for t, s, h in zip(self.trainers, states, self.hypers, strict=True)]
        return [s for s, _ in out], [terms for _, terms in out]

    def member_params(self, states: list[TrainState]) -> list[SAEParams]:
        """Each member's params, in the order of the configs."""
        params: list[SAEParams | None] = [None] * len(self.configs)
        for g, state in zip(self.groups, states, strict=True):
            for j, i in enumerate(g):
                params[i] = jax.tree.map(lambda a, j=j: np.asarray(a[j]), state.params)
        return params


class _Batches(NamedTuple):
    """Where the training batches come from: step t's batch is ``source.batch(seed, t, size) * scale``."""

    source: ActivationSource
    seed: int
    size: int
    scale: np.float32

    def block(self, start: int, n: int) -> jax.Array:
        return jnp.asarray(
            np.stack([self.source.batch(self.seed, start + t, self.size) for t in range(n)]) * self.scale
        )


def _train_blocks(
    sweep: _Sweep,
    states,
    done: int,
    history: list,
    batches: _Batches,
    out: Path,
    *,
    checkpoint_every_s: float,
    log_every: int,
    progress: bool,
):
    """Train from step ``done`` to the end, block by block, logging each block's rows and checkpointing every
    ``checkpoint_every_s``. Returns the last whole block's (done, states), which is checkpointed however it
    ends (an interruption included: Ctrl-C and SIGTERM are taken once, then ignored while the checkpoint saves)."""
    steps = sweep.configs[0].steps
    bar = progress_bar(steps, desc=f"SAE x{len(sweep.configs)}", unit="step", enabled=progress, initial=done)
    last_save = time.monotonic()
    consistent = (done, states)
    previous = {sig: signal.signal(sig, _interrupt_once) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while done < steps:
            n = min(BLOCK - done % BLOCK, steps - done)
            states, terms = sweep.update(states, batches.block(done, n))
            rows = _log_rows(sweep.groups, terms, states, sweep.configs, done, n, log_every)
            history.extend(rows)
            with (out / LOG_FILE).open("a") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
            done += n
            consistent = (done, states)
            bar.update(n)
            if rows:
                bar.set_postfix(_postfix(rows[-1]))
            if time.monotonic() - last_save > checkpoint_every_s:
                _save_checkpoint(out / CHECKPOINT, *consistent)
                last_save = time.monotonic()
    except KeyboardInterrupt:
        bar.write("interrupted: saving the last whole block; rerun the same command to resume")
    finally:
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        try:
            bar.close()
            _save_checkpoint(out / CHECKPOINT, *consistent)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    return consistent


def _postfix(row: dict) -> dict[str, str]:
    """The progress bar's figures: a log row's loss, L0, FVU and dead fraction, averaged over members."""
    return {
        "loss": f"{np.mean(row['loss']):.3g}",
        "l0": f"{np.mean(row['l0']):.1f}",
        "fvu": f"{np.mean(row['fvu']):.3f}",
        "dead": f"{np.mean(row['dead']):.0%}",
    }


def _interrupt_once(*_):
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    raise KeyboardInterrupt


def _check_sweep(out: Path, meta: dict) -> None:
    path = out / SWEEP_FILE
    meta = json.loads(json.dumps(meta))
    if path.exists():
        saved = json.loads(path.read_text())
        if saved != meta:
            raise JaxinterpError(
                f"{out} holds another SAE sweep (layer, configs, data or seed differ); use a new --out directory "
                "or the same settings to resume it"
            )
    else:
        write_text(path, json.dumps(meta, indent=2))


def _log_rows(groups, terms, states, configs, done, n, every) -> list[dict]:
    """One log row per ``every`` steps: each field a list over members in config order."""
    fields = {name: np.zeros((len(configs), n)) for name in ("loss", "recon", "aux", "l0", "fvu")}
    dead = np.zeros(len(configs))
    for g, t, s in zip(groups, terms, states, strict=True):
        for name, values in fields.items():
            values[g] = np.asarray(getattr(t, name))
        dead[g] = np.asarray(s.since_fired >= configs[g[0]].dead_samples).mean(1)
    rows = []
    for t in range(n):
        step = done + t + 1
        if step % every == 0 or t == n - 1:
            row = {"step": step, **{k: v[:, t].round(6).tolist() for k, v in fields.items()}}
            row["dead"] = dead.round(6).tolist()  # at the end of the block
            rows.append(row)
    return rows


def _read_log(path: Path, upto: int) -> list[dict]:
    """The log rows up to step ``upto`` (rows past a checkpoint, from an interrupted block, are dropped)."""
    if not path.exists():
        return []
    rows = [r for r in map(json.loads, path.read_text().splitlines()) if r["step"] <= upto]
    write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
    return rows


def _save_checkpoint(path: Path, done: int, states: list[TrainState]) -> None:
    import orbax.checkpoint as ocp

    with atomic_path(path, directory=True) as tmp:  # the checkpoint exists whole or not at all
        with ocp.StandardCheckpointer() as ckpt:
            ckpt.save(tmp.absolute() / "state", {"groups": jax.tree.map(np.asarray, states)})
        (tmp / "step.json").write_text(json.dumps({"step": done}))


def _load_checkpoint(path: Path, template: list[TrainState]) -> tuple[int, list[TrainState]]:
    import orbax.checkpoint as ocp

    target = {"groups": jax.tree.map(np.asarray, template)}
    with ocp.StandardCheckpointer() as ckpt:
        restored = ckpt.restore(path.absolute() / "state", target)["groups"]
    states = [
        jax.tree.map(jnp.asarray, TrainState(*s) if not isinstance(s, TrainState) else s) for s in restored
    ]
    states = [
        jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(t), jax.tree_util.tree_leaves(s))
        for t, s in zip(template, states, strict=True)
    ]
    return json.loads((path / "step.json").read_text())["step"], states
