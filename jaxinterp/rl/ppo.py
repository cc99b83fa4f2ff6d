"""PPO for Procgen Heist, shaped like purejaxrl: a pure jitted policy step and a pure jitted update (epochs and
minibatches as ``lax.scan``), with procgen stepping on the host.

``make_train(config)`` returns the pieces; ``train`` runs them resumably: checkpoints hold the params,
optimizer, reward normalizer, RNG and the environments' own state, so a restarted run continues exactly.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from jaxinterp.envs.heist import NUM_ACTIONS
from jaxinterp.errors import JaxinterpError
from jaxinterp.models.agent import DATA, Agent, data_mesh, in_device_passes, pass_size, shard_rows
from jaxinterp.models.impala import Architecture, get_architecture, init_params

__all__ = [
    "COMPUTE_ONLY",
    "PPOConfig",
    "RewardNormalizer",
    "TrainState",
    "Trainer",
    "Transition",
    "compute_gae",
    "make_train",
    "minibatch_data",
    "ppo_loss",
]

COMPUTE_ONLY = ("microbatch_size", "devices")  # config fields that change speed but not the training math


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """Hyper-parameters; the defaults are the procgen PPO baseline used for Heist agents (easy, unbounded levels)."""

    arch: str = "impala"
    num_envs: int = 64
    num_steps: int = 256
    num_minibatches: int = 8
    update_epochs: int = 3
    lr: float = 5e-4
    gamma: float = 0.999
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    normalize_rewards: bool = True
    distribution_mode: str = "easy"
    num_levels: int = 0
    start_level: int = 0
    microbatch_size: int | None = None
    """Frames per network pass: a minibatch's gradient is the mean over passes of this size, and a policy step
    runs its envs in passes of it (when it divides their number), so it changes speed, not results. None picks
    `jaxinterp.models.agent.CPU_PASS_SIZE` (32) on CPU and one pass on accelerators."""
    devices: int | None = None
    """Local devices that share each minibatch's passes and each policy step's envs (data parallel; gradients
    summed across them). None takes as many as split the passes evenly: on a CPU exposed as one device per core
    (`jaxinterp train-agent` does this) a minibatch step on 2 cores took 1.80 ms/frame, against 2.27 on one device
    with XLA's own threads and 3.42 on one core. Accelerators run a minibatch in one pass by default, so several of
    them split it only with a ``microbatch_size`` that makes several passes. Changes speed, not results."""

    def __post_init__(self) -> None:
        get_architecture(self.arch)
        batch = self.num_envs * self.num_steps
        if batch % self.num_minibatches:
            raise JaxinterpError(
                f"num_envs*num_steps (={batch}) must be divisible by num_minibatches (={self.num_minibatches})"
            )
        for name in ("num_envs", "num_steps", "num_minibatches", "update_epochs"):
            if getattr(self, name) < 1:
                raise JaxinterpError(f"PPOConfig.{name} must be >= 1, got {getattr(self, name)}")
        mb_size = batch // self.num_minibatches
        if self.microbatch_size is not None and (self.microbatch_size < 1 or mb_size % self.microbatch_size):
            raise JaxinterpError(
                f"microbatch_size must divide the minibatch size {mb_size}, got {self.microbatch_size}"
            )
        if self.devices is not None and self.devices < 1:
            raise JaxinterpError(f"PPOConfig.devices must be >= 1 or None (all that fit), got {self.devices}")

    @property
    def microbatches(self) -> int:
        """How many passes each minibatch's gradient is accumulated over."""
        mb_size = self.frames_per_iteration // self.num_minibatches
        return mb_size // pass_size(mb_size, self.microbatch_size)

    @property
    def frames_per_iteration(self) -> int:
        return self.num_envs * self.num_steps

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def algorithm_dict(self) -> dict[str, Any]:
        """The fields that define the learning algorithm: a run resumes only with these unchanged."""
        return {k: v for k, v in self.to_dict().items() if k not in COMPUTE_ONLY}

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> PPOConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise JaxinterpError(f"unknown PPO config keys {unknown}; valid keys: {sorted(known)}")
        return cls(**fields)


class RewardNormalizer(NamedTuple):
    """openai-baselines VecNormalize for rewards: scale by the running std of the discounted return, clip at 10."""

    returns: np.ndarray  # per env discounted return so far
    mean: np.ndarray
    var: np.ndarray
    count: np.ndarray

    @classmethod
    def create(cls, num_envs: int) -> RewardNormalizer:
        return cls(np.zeros(num_envs), np.zeros(()), np.ones(()), np.full((), 1e-4))

    def update(
        self, reward: np.ndarray, done: np.ndarray, gamma: float
    ) -> tuple[RewardNormalizer, np.ndarray]:
        returns = self.returns * gamma + reward
        b_mean, b_var, b_count = returns.mean(), returns.var(), returns.size
        delta, total = b_mean - self.mean, self.count + b_count
        mean = self.mean + delta * b_count / total
        m2 = self.var * self.count + b_var * b_count + delta**2 * self.count * b_count / total
        scaled = np.clip(reward / np.sqrt(m2 / total + 1e-8), -10.0, 10.0).astype(np.float32)
        return RewardNormalizer(np.where(done, 0.0, returns), mean, m2 / total, total), scaled


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    key: jax.Array  # raw uint32 key data, so that checkpoints hold plain arrays
    normalizer: RewardNormalizer
    iteration: np.ndarray
    frames: np.ndarray


class Transition(NamedTuple):
    """One rollout step for all envs (arrays are stacked along a leading time axis)."""

    obs: jax.Array  # uint8 (N, 64, 64, 3)
    action: jax.Array
    logp: jax.Array
    value: jax.Array
    reward: jax.Array  # normalized when config.normalize_rewards
    done: jax.Array  # the episode ended with this step


def compute_gae(
    traj: Transition, last_value: jax.Array, gamma: float, lam: float
) -> tuple[jax.Array, jax.Array]:
    """Generalized advantage estimates and value targets, scanning backwards over time."""

    def step(carry, t):
        next_adv, next_value = carry
        nonterminal = 1.0 - t.done.astype(jnp.float32)
        delta = t.reward + gamma * next_value * nonterminal - t.value
        adv = delta + gamma * lam * nonterminal * next_adv
        return (adv, t.value), adv

    _, adv = jax.lax.scan(step, (jnp.zeros_like(last_value), last_value), traj, reverse=True)
    return adv, adv + traj.value


def minibatch_data(traj: Transition, adv: jax.Array, ret: jax.Array) -> dict[str, jax.Array]:
    """The loss's inputs for every frame of a rollout, time and env axes flattened into one batch axis."""
    data = {
        "obs": traj.obs,
        "action": traj.action,
        "logp": traj.logp,
        "value": traj.value,
        "adv": adv,
        "ret": ret,
    }
    return jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), data)


class Trainer(NamedTuple):
    """The pure pieces of PPO for one config (``make_train``'s result)."""

    config: PPOConfig
    agent: Agent  # the architecture (its params are the initial ones)
    optimizer: optax.GradientTransformation
    init: Callable  # key -> TrainState
    policy_step: Callable  # (params, obs, key) -> (action, logp, value)   [jitted]
    loss: Callable  # (params, minibatch with normalized advantages) -> (loss, metrics)
    minibatch_step: Callable  # (params, opt_state, minibatch) -> (params, opt_state, metrics)
    update: Callable  # (state, traj, last_value) -> (state, metrics)   [jitted; epochs x minibatches scan]
    devices: tuple  # the devices each minibatch is split over


@functools.lru_cache(maxsize=8)
def make_train(config: PPOConfig) -> Trainer:
    """Build the jitted policy step and update for ``config`` (purejaxrl's ``make_train``, host-stepped env).

    Cached per config value (a frozen dataclass, so equal configs hit the same entry): the trainer's jitted
    functions close over the config, and resuming or evaluating in the same process does not compile them again.
    """
    arch = get_architecture(config.arch)
    agent = Agent.random(arch, num_actions=NUM_ACTIONS)
    optimizer = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(config.lr, eps=1e-5))
    update_mesh = data_mesh(config.microbatches, config.devices, "micro-batches per minibatch")
    loss = functools.partial(ppo_loss, config, agent)
    minibatch_step = functools.partial(_minibatch_step, config, loss, optimizer, update_mesh)
    return Trainer(
        config,
        agent,
        optimizer,
        init=functools.partial(_init, config, arch, optimizer),
        policy_step=jax.jit(functools.partial(_policy_step, config, agent)),
        loss=loss,
        minibatch_step=minibatch_step,
        update=jax.jit(functools.partial(_update, config, minibatch_step)),
        devices=tuple(update_mesh.devices.flat),
    )


def _init(config: PPOConfig, arch: Architecture, optimizer: optax.GradientTransformation, key: jax.Array):
    """A fresh `TrainState`: initial params, optimizer and reward normalizer, and the key the run goes on with."""
    k_init, k_run = jax.random.split(key)
    params = init_params(arch, k_init, num_actions=NUM_ACTIONS)
    return TrainState(
        params,
        optimizer.init(params),
        jax.random.key_data(k_run),
        RewardNormalizer.create(config.num_envs),
        np.zeros((), np.int64),
        np.zeros((), np.int64),
    )


def _policy_step(config: PPOConfig, agent: Agent, params, obs: jax.Array, key: jax.Array):
    """(action, its log-probability, value) for every env's frame, actions sampled from the logits."""
    logits, value = in_device_passes(agent.apply, params, obs, config.microbatch_size, config.devices)
    action = jax.random.categorical(key, logits)
    logp = jnp.take_along_axis(jax.nn.log_softmax(logits), action[:, None], 1)[:, 0]
    return action, logp, value


def ppo_loss(config: PPOConfig, agent: Agent, params, mb: dict[str, jax.Array]):
    """PPO's clipped objective on a minibatch whose advantages are already normalized: (loss, metrics)."""
    logits, value = agent.apply(params, mb["obs"])
    logp_all = jax.nn.log_softmax(logits)
    logp = jnp.take_along_axis(logp_all, mb["action"][:, None], 1)[:, 0]
    ratio = jnp.exp(logp - mb["logp"])
    adv = mb["adv"]  # normalized over the whole minibatch by minibatch_step
    pg = -jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - config.clip_eps, 1 + config.clip_eps) * adv).mean()
    # Clipped value loss, as in the procgen baseline (PPO2).
    v_clip = mb["value"] + jnp.clip(value - mb["value"], -config.clip_eps, config.clip_eps)
    v_loss = 0.5 * jnp.maximum((value - mb["ret"]) ** 2, (v_clip - mb["ret"]) ** 2).mean()
    entropy = -(jnp.exp(logp_all) * logp_all).sum(-1).mean()
    total = pg + config.vf_coef * v_loss - config.ent_coef * entropy
    metrics = {
        "policy_loss": pg,
        "value_loss": v_loss,
        "entropy": entropy,
        "approx_kl": ((ratio - 1) - jnp.log(ratio)).mean(),
        "clip_fraction": (jnp.abs(ratio - 1) > config.clip_eps).mean(),
    }
    return total, metrics


def _minibatch_step(config: PPOConfig, loss: Callable, optimizer, update_mesh, params, opt_state, mb):
    """One optimizer step on a minibatch: advantages normalized over it, the gradient accumulated over its passes."""
    mb = {**mb, "adv": (mb["adv"] - mb["adv"].mean()) / (mb["adv"].std() + 1e-8)}

    # Equal-sized micro-batches, shared out over the devices: the mean of their mean-loss gradients is the
    # minibatch's gradient.
    def device_share(params, rows):
        def micro(acc, m):
            g, metrics = jax.grad(loss, has_aux=True)(params, m)
            return jax.tree.map(jnp.add, acc, g), metrics

        passes = config.microbatches // update_mesh.size
        split = jax.tree.map(lambda x: x.reshape(passes, -1, *x.shape[1:]), rows)
        grads, metrics = jax.lax.scan(micro, jax.tree.map(jnp.zeros_like, params), split)
        grads = jax.tree.map(lambda g: jax.lax.psum(g, DATA) / config.microbatches, grads)
        return grads, jax.tree.map(lambda m: jax.lax.pmean(m.mean(), DATA), metrics)

    grads, metrics = shard_rows(device_share, update_mesh, P())(params, mb)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, metrics


def _update(config: PPOConfig, minibatch_step: Callable, state: TrainState, traj: Transition, last_value):
    """GAE over the rollout, then ``update_epochs`` passes over it in shuffled minibatches: (state, metrics)."""
    batch = config.frames_per_iteration
    mb_size = batch // config.num_minibatches
    adv, ret = compute_gae(traj, last_value, config.gamma, config.gae_lambda)
    flat = minibatch_data(traj, adv, ret)
    key, k_epochs = jax.random.split(jax.random.wrap_key_data(state.key))

    def epoch(carry, k):
        perm = jax.random.permutation(k, batch).reshape(config.num_minibatches, mb_size)

        def mb_body(carry, idx):
            params, opt_state = carry
            params, opt_state, metrics = minibatch_step(
                params, opt_state, jax.tree.map(lambda x: x[idx], flat)
            )
            return (params, opt_state), metrics

        return jax.lax.scan(mb_body, carry, perm)

    (params, opt_state), metrics = jax.lax.scan(
        epoch, (state.params, state.opt_state), jax.random.split(k_epochs, config.update_epochs)
    )
    state = state._replace(params=params, opt_state=opt_state, key=jax.random.key_data(key))
    # How much of the value targets' variance the rollout's value estimates explained (baselines' "explained
    # variance"): near 0 or below, the advantages are mostly noise.
    explained = 1 - jnp.var(flat["ret"] - flat["value"]) / (jnp.var(flat["ret"]) + 1e-8)
    return state, {**jax.tree.map(jnp.mean, metrics), "explained_variance": explained}
