"""Training SAEs, many at once: ``make_train(config)`` gives a jitted step that is vmapped over a sweep's members
(stacked params, per-member k, coefficient and learning rate) and scanned over a block of batches.

Members that share the static settings (`SAEConfig.static`) are one *group* and one compiled program; a sweep of
several architectures or widths trains its groups side by side on the same batches. The member axis is sharded
over the local devices. `train_sweep` drives the groups with orbax checkpoints, resumes exactly, and shows
progress with loss, L0, FVU and the dead fraction.
"""

from __future__ import annotations

import json
import shutil
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from jaxinterp.errors import JaxinterpError
from jaxinterp.models.agent import ROWS, data_mesh
from jaxinterp.sae.config import SAEConfig
from jaxinterp.sae.data import ActivationSource, geometric_median, input_scale
from jaxinterp.sae.model import Hyper, SAEParams, Terms, hyper_of, init_params, loss

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


def make_train(config: SAEConfig, devices: int | None = None, member_pass: int | None = None) -> Trainer:
    """The group's compiled init and update. ``config`` fixes the static settings; the traced ones come per member
    in the ``hypers`` passed to ``update``.

    Inside the one compiled step each member scans the block of batches, and members run in passes of
    ``member_pass`` (a ``lax.map`` over passes, each pass vmapped); None: one member per pass on CPU, all in one
    pass on accelerators. XLA:CPU runs the batched matmuls of a vmapped step 3-5x slower than the same matmuls one
    member at a time (16 members 32 -> 256, batch 2048: encoder 152 vs 30 ms, gradient 414 vs 82 ms), so on CPU the
    members take turns within the program, each over the whole block (a map inside the scan over batches was 1.6x
    slower than that, slicing every member's state at every step)."""
    tx = _optimizer(config)
    normalize_decoder = config.arch != "relu"  # relu keeps free norms and weights its L1 by them

    def init_one(key, b_dec):
        params = init_params(config, key, b_dec)
        since = jnp.zeros(config.width, jnp.int32)
        return TrainState(params, tx.init(params), since, jnp.int32(0))

    def step_one(state: TrainState, hyper: Hyper, x: jax.Array) -> tuple[TrainState, Terms]:
        dead = state.since_fired >= config.dead_samples
        warm = jnp.clip((state.step + 1) / max(config.sparsity_warmup_steps, 1), 0.0, 1.0)
        grads, (z, terms) = jax.grad(lambda p: loss(config, p, x, hyper, dead, warm), has_aux=True)(
            state.params
        )
        if normalize_decoder:  # keep the rows on the unit sphere: drop the gradient's radial part
            w = state.params.W_dec
            grads = grads._replace(W_dec=grads.W_dec - jnp.sum(grads.W_dec * w, 1, keepdims=True) * w)
        if config.arch != "jumprelu":
            grads = grads._replace(threshold=jnp.zeros_like(grads.threshold))
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, jax.tree.map(lambda u: hyper.lr * u, updates))
        if normalize_decoder:
            params = params._replace(W_dec=_unit_rows(params.W_dec))
        if config.arch == "jumprelu":
            params = params._replace(threshold=jnp.maximum(params.threshold, 0.0))
        if config.arch == "batchtopk":  # the inference threshold: an EMA of the smallest activation kept
            old = params.threshold[0]
            new = jnp.where(
                state.step == 0,
                terms.kept_min,
                config.threshold_decay * old + (1 - config.threshold_decay) * terms.kept_min,
            )
            new = jnp.where(jnp.isfinite(new), new, old)
            params = params._replace(threshold=jnp.full_like(params.threshold, new))
        fired = jnp.any(z > 0, axis=0)
        since = jnp.where(fired, 0, jnp.minimum(state.since_fired + x.shape[0], SINCE_CAP))
        return TrainState(params, opt_state, since, state.step + 1), terms

    def member_block(state: TrainState, hyper: Hyper, xs: jax.Array) -> tuple[TrainState, Terms]:
        """One member over a block of batches (a scan): its terms come out (T,)."""
        return jax.lax.scan(lambda carry, x: step_one(carry, hyper, x), state, xs)

    def block(states, hypers, xs):
        members = len(hypers.k)
        rows = member_pass or (1 if jax.default_backend() == "cpu" else members)
        run = jax.vmap(member_block, in_axes=(0, 0, None))
        if rows >= members or members % rows:
            return run(states, hypers, xs)
        # a lax.map over passes of `rows` members, each pass vmapped (see the docstring)
        split = lambda t: t.reshape(members // rows, rows, *t.shape[1:])
        out = jax.lax.map(lambda sh: run(*sh, xs), jax.tree.map(split, (states, hypers)))
        return jax.tree.map(lambda t: t.reshape(members, *t.shape[2:]), out)

    def sharded(fn, members: int, in_specs, out_specs):
        mesh = data_mesh(members, devices, "SAEs")
        return jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False))

    P = jax.sharding.PartitionSpec

    def init(keys: jax.Array, b_dec) -> TrainState:
        fn = sharded(jax.vmap(init_one, in_axes=(0, None)), len(keys), (ROWS, P()), ROWS)
        return fn(keys, jnp.asarray(b_dec, jnp.float32))

    def update(states: TrainState, hypers: Hyper, xs: jax.Array) -> tuple[TrainState, Terms]:
        return _compiled_update(len(hypers.k))(states, hypers, xs)

    compiled: dict[int, Callable] = {}

    def _compiled_update(members: int) -> Callable:
        if members not in compiled:
            compiled[members] = sharded(block, members, (ROWS, ROWS, P()), (ROWS, ROWS))
        return compiled[members]

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
    steps, batch = configs[0].steps, configs[0].batch_size
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

    groups = group_configs(configs)
    trainers = [make_train(configs[g[0]], devices) for g in groups]
    hypers = [stack_hypers([configs[i] for i in g]) for g in groups]
    b_dec = geometric_median(sample * scale)
    states = [
        t.init(jnp.stack([jax.random.key(configs[i].seed) for i in g]), b_dec)
        for t, g in zip(trainers, groups, strict=True)
    ]
    done = 0
    if (out / CHECKPOINT).exists():
        done, states = _load_checkpoint(out / CHECKPOINT, states)
    history = _read_log(out / LOG_FILE, done)
    bar = tqdm(total=steps, initial=done, unit="step", disable=not progress, desc=f"SAE x{len(configs)}")
    last_save = time.monotonic()
    consistent = (done, states)
    previous = {sig: signal.signal(sig, _interrupt_once) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while done < steps:
            n = min(BLOCK - done % BLOCK, steps - done)
            xs = np.stack([source.batch(data_seed, done + t, batch) for t in range(n)]) * np.float32(scale)
            terms = []
            for g, (trainer, hyper) in enumerate(zip(trainers, hypers, strict=True)):
                states[g], t = trainer.update(states[g], hyper, jnp.asarray(xs))
                terms.append(t)
            rows = _log_rows(groups, terms, states, configs, done, n, log_every)
            history.extend(rows)
            with (out / LOG_FILE).open("a") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
            done += n
            consistent = (done, list(states))
            bar.update(n)
            if rows:
                last = rows[-1]
                bar.set_postfix(
                    loss=f"{np.mean(last['loss']):.3g}",
                    l0=f"{np.mean(last['l0']):.1f}",
                    fvu=f"{np.mean(last['fvu']):.3f}",
                    dead=f"{np.mean(last['dead']):.0%}",
                )
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
    done, states = consistent
    params: list[SAEParams | None] = [None] * len(configs)
    for g, state in zip(groups, states, strict=True):
        for j, i in enumerate(g):
            params[i] = jax.tree.map(lambda a, j=j: np.asarray(a[j]), state.params)
    if done < steps:
        raise KeyboardInterrupt
    return SweepResult(configs, params, scale, history)


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
        path.write_text(json.dumps(meta, indent=2))


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
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def _save_checkpoint(path: Path, done: int, states: list[TrainState]) -> None:
    import orbax.checkpoint as ocp

    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(tmp.absolute() / "state", {"groups": jax.tree.map(np.asarray, states)})
    (tmp / "step.json").write_text(json.dumps({"step": done}))
    old = path.with_name(path.name + ".old")
    if path.exists():
        path.rename(old)
    tmp.rename(path)  # the checkpoint exists whole or not at all
    shutil.rmtree(old, ignore_errors=True)


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
