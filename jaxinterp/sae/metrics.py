"""How good an SAE is: reconstruction (L0, FVU, ...), policy fidelity with the reconstruction spliced into the agent,
and ground truth: how well latents, against raw channels, pick out the game's objects at their positions.

All on held-out samples. FVU is pooled: summed squared error over the summed squared deviation from the mean.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp.envs.ground_truth import OBJECT_CLASSES
from jaxinterp.envs.heist import MOVE_OF_ACTION
from jaxinterp.envs.rollout import Policy, agent_policy
from jaxinterp.envs.stream import batches, stream, stream_rows
from jaxinterp.models.agent import Agent, policy_kl, preprocess
from jaxinterp.rl.evaluate import level_config, run_episodes
from jaxinterp.sae import model
from jaxinterp.sae.files import SAE

__all__ = [
    "BATCH",
    "DENSE_FREQUENCY",
    "FRAMES_PER_PASS",
    "PARENTS",
    "PROBE_K",
    "ObjectScores",
    "absorption",
    "channel_thresholds",
    "choose_and_score",
    "encode_in_batches",
    "object_scores",
    "objects_present",
    "policy_fidelity",
    "reconstruction",
    "sparse_probe",
    "splice",
    "spliced_episodes",
    "spliced_policy",
    "standardize",
]

DENSE_FREQUENCY = 0.1  # a latent firing at more than this fraction of positions is dense
BATCH = 4096  # samples per encoder pass
FRAMES_PER_PASS = 64  # frames per spliced forward pass


def encode_in_batches(sae: SAE, x: np.ndarray, batch: int = BATCH) -> np.ndarray:
    """Latents of (S, d_in) samples, in passes of ``batch`` samples."""
    out = stream_rows(batches([(x,)], batch, pad=False), lambda xb: _encode(sae.arch, sae.params, xb, sae.k))
    return np.zeros((0, sae.d_sae), np.float32) if out is None else out


@functools.partial(jax.jit, static_argnums=0)
def _encode(arch, params, x, k):
    return model.encode(arch, params, x, jnp.int32(k))


@functools.partial(jax.jit, static_argnums=0)
def _reconstruct(arch, params, x, k):
    z = model.encode(arch, params, x, jnp.int32(k))
    return z, model.decode(params, z)


def reconstruction(sae: SAE, x: np.ndarray, batch: int = BATCH) -> dict:
    """L0, MSE, pooled FVU, mean cosine similarity and L2 ratio, dead and dense fractions, and each latent's log10
    firing frequency, on samples ``x`` (S, d_in) of raw activations."""
    x = np.asarray(x, np.float32)
    mean = x.mean(0)

    def fold(acc, out, batch):
        (xb,) = batch.arrays
        z, xh = (np.asarray(a, np.float64) for a in out)
        xb = xb.astype(np.float64)
        nx, nh = np.linalg.norm(xb, axis=1), np.linalg.norm(xh, axis=1)
        acc["err2"] += float(((xb - xh) ** 2).sum())
        acc["dev"] += float(((xb - mean) ** 2).sum())
        acc["l0"] += float((z > 0).sum())
        acc["cos"] += float((np.sum(xb * xh, 1) / np.maximum(nx * nh, 1e-12)).sum())
        acc["ratio"] += float((nh / np.maximum(nx, 1e-12)).sum())
        acc["fired"] = acc["fired"] + (z > 0).sum(0)
        return acc

    sums = dict.fromkeys(("err2", "dev", "l0", "cos", "ratio"), 0.0) | {
        "fired": np.zeros(sae.d_sae, np.int64)
    }
    step = lambda _, xb, valid: _reconstruct(sae.arch, sae.params, xb, sae.k)
    sums = stream(batches([(x,)], batch, pad=False), step, fold=fold, acc=sums).acc
    err2, dev_cos, l0, cos, ratio, fired = (sums[k] for k in ("err2", "dev", "l0", "cos", "ratio", "fired"))
    n = len(x)
    freq = fired / max(n, 1)
    return {
        "samples": n,
        "l0": l0 / n,
        "mse": err2 / (n * x.shape[1]),
        "fvu": err2 / max(dev_cos, 1e-12),
        "cosine": cos / n,
        "l2_ratio": ratio / n,
        "dead_fraction": float((fired == 0).mean()),
        "dense_fraction": float((freq > DENSE_FREQUENCY).mean()),
        "log10_frequency": np.log10(np.maximum(freq, 1e-10)).astype(np.float32),
    }


def splice(sae: SAE, acts: jax.Array) -> jax.Array:
    """The SAE's reconstruction of a layer's activation, per position (NHWC or (N, d_in))."""
    flat = acts.reshape(-1, acts.shape[-1])
    return model.decode(sae.params, model.encode(sae.arch, sae.params, flat, jnp.int32(sae.k))).reshape(
        acts.shape
    )


@functools.partial(jax.jit, static_argnames=("layer", "arch"))
def _fidelity_pass(agent: Agent, layer: str, arch: str, sae_params, k, obs, mean_act):
    params = agent.params
    images = preprocess(obs)
    clean = agent.forward(params, images)
    x = clean[layer]
    sae = SAE(arch, k, sae_params, layer, {})
    replaced = {"sae": splice(sae, x), "zero": jnp.zeros_like(x), "mean": jnp.broadcast_to(mean_act, x.shape)}
    logp = jax.nn.log_softmax(clean[agent.arch.logits])
    value = clean[agent.arch.value][:, 0]
    moves = jax.nn.one_hot(jnp.asarray(MOVE_OF_ACTION), max(MOVE_OF_ACTION) + 1)  # (actions, moves)
    out = {}
    for name, r in replaced.items():
        acts = agent.forward(params, images, {layer: r - x})
        lq = jax.nn.log_softmax(acts[agent.arch.logits])
        out[name] = {
            "kl": policy_kl(logp, lq),
            "agree": jnp.argmax(lq, -1) == jnp.argmax(logp, -1),
            "agree_move": jnp.argmax(jnp.exp(lq) @ moves, -1) == jnp.argmax(jnp.exp(logp) @ moves, -1),
            "dvalue": jnp.abs(acts[agent.arch.value][:, 0] - value),
        }
    return out


def policy_fidelity(agent: Agent, sae: SAE, frames: np.ndarray, mean_act: np.ndarray) -> dict:
    """With the SAE's reconstruction spliced into its layer for the rest of the forward pass, on uint8 ``frames``:
    action agreement (argmax) with the clean agent, and move agreement (argmax of the probability summed over the
    actions that make the same move, `MOVE_OF_ACTION`: the seven stand-still actions have near-equal logits, so
    their argmax flips without any change of behaviour), mean policy KL(clean || spliced), mean |value change|, and
    SAELens' KL score against zero and against mean ablation of the layer (1 = as good as clean, 0 = as bad as the
    ablation). ``mean_act`` is the layer's mean activation per position (for mean ablation)."""

    def fold(sums, out, _batch):
        for name, fields in out.items():
            for f, v in fields.items():
                sums.setdefault(name, {}).setdefault(f, 0.0)
                sums[name][f] += float(np.sum(np.asarray(v, np.float64)))
        return sums

    mean_act = jnp.asarray(mean_act)
    step = lambda _, obs, valid: _fidelity_pass(agent, sae.layer, sae.arch, sae.params, sae.k, obs, mean_act)
    sums = stream(batches([(frames,)], FRAMES_PER_PASS, pad=False), step, fold=fold, acc={}).acc
    n = len(frames)
    means = {name: {f: v / n for f, v in fields.items()} for name, fields in sums.items()}
    kl = means["sae"]["kl"]
    return {
        "frames": n,
        "action_agreement": means["sae"]["agree"],
        "move_agreement": means["sae"]["agree_move"],
        "kl": kl,
        "value_change": means["sae"]["dvalue"],
        "kl_score_zero": 1 - kl / means["zero"]["kl"] if means["zero"]["kl"] > 0 else float("nan"),
        "kl_score_mean": 1 - kl / means["mean"]["kl"] if means["mean"]["kl"] > 0 else float("nan"),
        "zero_ablation": means["zero"],
        "mean_ablation": means["mean"],
    }


def spliced_policy(agent: Agent, sae: SAE) -> Policy:
    """A rollout policy (`jaxinterp.envs.rollout.Policy`): the agent with the SAE's reconstruction spliced into its
    layer, actions sampled from the resulting logits."""

    def policy(key: jax.Array, obs: np.ndarray) -> tuple[jax.Array, dict]:
        return _spliced_act(agent, sae.params, key, obs, arch=sae.arch, k=sae.k, layer=sae.layer), {}

    policy.description = f"{agent.arch.name} agent with an SAE spliced into {sae.layer} (sampled)"
    return policy


@functools.partial(jax.jit, static_argnames=("arch", "k", "layer"))
def _spliced_act(agent: Agent, sae_params, key: jax.Array, obs: jax.Array, *, arch: str, k: int, layer: str):
    images = preprocess(obs)
    x = agent.forward(agent.params, images)[layer]
    spliced = splice(SAE(arch, k, sae_params, layer, {}), x)
    logits = agent.forward(agent.params, images, {layer: spliced - x})[agent.arch.logits]
    return jax.random.categorical(key, logits).astype(jnp.int32)


def spliced_episodes(agent: Agent, sae: SAE, episodes: int, *, seed: int = 0, progress: bool = True) -> dict:
    """Success and return of the clean agent and of the agent with the SAE spliced in, on the same unseen levels
    (`jaxinterp.rl.evaluate`); the two play the same level sequence per env."""
    config = level_config("unseen", num_envs=min(64, episodes), seed=seed)
    runs = {"clean": agent_policy(agent), "spliced": spliced_policy(agent, sae)}
    return {
        name: run_episodes(policy, config, episodes, seed=seed, progress=progress, desc=name).to_dict()
        for name, policy in runs.items()
    }


def objects_present(object_maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """(N, H, W, K) bool: which object classes have any pixel in each position's block of the frame."""
    n, h, w = object_maps.shape
    onehot = object_maps[..., None] == np.arange(len(OBJECT_CLASSES), dtype=object_maps.dtype)
    return onehot.reshape(n, height, h // height, width, w // width, -1).any((2, 4))


class ObjectScores(NamedTuple):
    """Per feature (latent or channel) and object class: precision, recall and F1 of "fires here" against "the
    class is under this position" (at the layer's resolution); ``threshold`` is what "fires" meant."""

    precision: np.ndarray  # (F, K)
    recall: np.ndarray
    f1: np.ndarray
    threshold: np.ndarray  # (F, K)


def _scores(fires: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    f, p = fires.astype(np.float32), present.astype(np.float32)
    tp = f.T @ p  # (F, K)
    fired, there = f.sum(0)[:, None], p.sum(0)[None, :]
    precision = np.where(fired > 0, tp / np.maximum(fired, 1), 0.0)
    recall = np.where(there > 0, tp / np.maximum(there, 1), np.nan)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    return precision, recall, np.where(there > 0, f1, np.nan)


def object_scores(
    values: np.ndarray, present: np.ndarray, *, thresholds: np.ndarray | None = None
) -> ObjectScores:
    """Scores of features ``values`` (S, F) against ``present`` (S, K). SAE latents fire when > 0 (``thresholds``
    None). Raw channels have no natural zero, so pass candidate thresholds (Q, F): each (channel, class) keeps the
    one with the best F1, which favours channels, so a latent that beats them does so with a margin."""
    if thresholds is None:
        p, r, f1 = _scores(values > 0, present)
        return ObjectScores(p, r, f1, np.zeros_like(f1))
    best = None
    for t in thresholds:
        p, r, f1 = _scores(values > t, present)
        cand = (p, r, f1, np.broadcast_to(t[:, None], f1.shape))
        if best is None:
            best = cand
        else:
            better = np.nan_to_num(f1, nan=-1) > np.nan_to_num(best[2], nan=-1)
            best = tuple(np.where(better, c, b) for c, b in zip(cand, best, strict=True))
    return ObjectScores(*best)


def _choose(
    present: np.ndarray, values: np.ndarray, thresholds: Callable[[np.ndarray], np.ndarray] | None
) -> list[tuple[int, float]]:
    """Per column of ``present``, the feature with the best F1 and the threshold above which it fires."""
    chosen = object_scores(values, present, thresholds=None if thresholds is None else thresholds(values))
    best = np.argmax(np.nan_to_num(chosen.f1, nan=-1), 0)
    return [(int(f), float(chosen.threshold[f, j])) for j, f in enumerate(best)]


def choose_and_score(
    present_choose: np.ndarray,
    values_choose: np.ndarray,
    present_score: np.ndarray,
    values_score: np.ndarray,
    *,
    thresholds: Callable[[np.ndarray], np.ndarray] | None = None,
) -> list[tuple[int, float]]:
    """Per object class, (feature, F1): the feature (and, with ``thresholds``, its threshold) with the best F1 on
    the first set of samples, scored on the second; NaN F1 where the class never occurs in the second, or where
    the first has no sample without it (the last stage's 8 x 8-pixel blocks all hold some wall: nothing to tell
    apart, and a feature that fires everywhere would score F1 1)."""
    out = []
    for j, (f, t) in enumerate(_choose(present_choose, values_choose, thresholds)):
        _, _, f1 = _scores((values_score[:, f] > t)[:, None], present_score[:, [j]])
        out.append((f, float("nan") if present_choose[:, j].all() else float(f1[0, 0])))
    return out


PARENTS = {
    "key": ("key_blue", "key_green", "key_red"),
    "lock": ("lock_blue", "lock_green", "lock_red"),
}
"""Parent classes for the absorption check: a position holds the parent when it holds any of its children."""


def absorption(
    present_choose: np.ndarray,
    values_choose: np.ndarray,
    present_score: np.ndarray,
    values_score: np.ndarray,
    *,
    thresholds: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict[str, dict]:
    """Feature absorption (Chanin et al. 2024) against the ground truth. Per parent class (`PARENTS`: any key, any
    lock), the feature that best detects the parent and each child's own best feature are chosen on the first set
    of samples; on the second, per child: the parent feature's ``recall`` on the child's positions, and ``absorbed``:
    the fraction of them where the parent feature is silent while the child's feature fires (the parent direction
    taken over by a more specific feature). NaN where the child never occurs in the second set; a parent absent
    from the first set is left out."""
    index = {c: j for j, c in enumerate(OBJECT_CLASSES)}
    out = {}
    for parent, children in PARENTS.items():
        cols = [index[c] for c in children]
        with_parent = np.concatenate(
            [present_choose[:, cols], present_choose[:, cols].any(1, keepdims=True)], 1
        )
        if not with_parent[:, -1].any():
            continue
        *child_choice, (f, t) = _choose(with_parent, values_choose, thresholds)
        parent_fires = values_score[:, f] > t
        there = present_score[:, cols].any(1)
        _, _, f1 = _scores(parent_fires[:, None], there[:, None])
        per_child = {}
        for c, col, (fc, tc) in zip(children, cols, child_choice, strict=True):
            at = present_score[:, col]
            taken = ~parent_fires & (values_score[:, fc] > tc)
            recall, absorbed = (parent_fires[at].mean(), taken[at].mean()) if at.any() else (np.nan, np.nan)
            per_child[c] = {"feature": fc, "recall": float(recall), "absorbed": float(absorbed)}
        out[parent] = {"feature": f, "f1": float(f1[0, 0]), "children": per_child}
    return out


PROBE_K = (1, 2, 5)


def _logistic(x: np.ndarray, y: np.ndarray, steps: int = 25, ridge: float = 1e-3) -> np.ndarray:
    """Class-balanced logistic regression by Newton's method: weights (F + 1,) for standardized ``x`` (S, F)."""
    xb = np.concatenate([x, np.ones((len(x), 1))], 1)
    pos = y.mean()
    sample_w = np.where(y, 0.5 / max(pos, 1e-12), 0.5 / max(1 - pos, 1e-12)) / len(y)
    w = np.zeros(xb.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-np.clip(xb @ w, -30, 30)))
        grad = xb.T @ (sample_w * (p - y)) + ridge * w
        hess = (xb * (sample_w * p * (1 - p))[:, None]).T @ xb + ridge * np.eye(len(w))
        w -= np.linalg.solve(hess, grad)
    return w


def standardize(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sets scaled by the training set's mean and standard deviation per feature (float32)."""
    mu, sd = train.mean(0), train.std(0) + 1e-6
    return ((train - mu) / sd).astype(np.float32), ((test - mu) / sd).astype(np.float32)


def sparse_probe(
    z_train: np.ndarray, y_train: np.ndarray, z_test: np.ndarray, y_test: np.ndarray, k: int
) -> float:
    """k-sparse probing (SAEBench's shape) on `standardize`d features: the ``k`` features whose mean differs most
    between positive and negative training samples, a class-balanced logistic regression on them, its F1 on the
    test set."""
    y_train, y_test = y_train.astype(bool), y_test.astype(bool)
    if not y_train.any() or y_train.all() or not y_test.any():
        return float("nan")
    top = np.argsort(-np.abs(z_train[y_train].mean(0) - z_train[~y_train].mean(0)))[:k]
    w = _logistic(z_train[:, top].astype(np.float64), y_train)
    pred = np.concatenate([z_test[:, top], np.ones((len(z_test), 1))], 1) @ w > 0
    tp = float((pred & y_test).sum())
    return 2 * tp / max(float(pred.sum() + y_test.sum()), 1.0)


def channel_thresholds(
    values: np.ndarray, quantiles=(0.5, 0.75, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)
) -> np.ndarray:
    """(Q, F) candidate thresholds for raw channels: their quantiles over the samples."""
    return np.quantile(values, quantiles, axis=0)
