"""The host loop around PPO: rollouts on procgen, jitted updates, resumable checkpoints, JSONL metrics and a
learning curve. Restarting the same command continues from the last checkpoint exactly (envs included).

The run directory's layout, and reading its policy without a trainer, are `jaxinterp.weights.training_run`'s.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import shutil
import signal
import time
from pathlib import Path

import jax
import numpy as np

from jaxinterp.atomic import atomic_path, write_text
from jaxinterp.envs.heist import Episodes, HeistConfig, HeistEnv, HeistState
from jaxinterp.envs.stepping import step_policy
from jaxinterp.errors import JaxinterpError
from jaxinterp.progress import bar as progress_bar
from jaxinterp.rl.baseline import BaselineCurve, baseline_curve, has_baseline
from jaxinterp.rl.ppo import PPOConfig, RewardNormalizer, Trainer, TrainState, Transition, make_train
from jaxinterp.weights.training_run import (
    CHECKPOINTS,
    CONFIG_FILE,
    ENVS_FILE,
    STATE_DIR,
    checkpoints,
    latest_checkpoint,
    with_latest,
)

__all__ = [
    "CURVE_WINDOW",
    "EPISODE_LIMIT",
    "EPISODE_WINDOW",
    "KEEP_CHECKPOINTS",
    "heist_config",
    "logged_rows",
    "plot_learning_curve",
    "rollout",
    "save_learning_curve",
    "train",
]

KEEP_CHECKPOINTS = 2
METRICS_FILE = "metrics.jsonl"
EPISODE_WINDOW = 100  # episodes in the running return / success-rate average
CURVE_WINDOW = 500  # episodes in the learning curve's smoother mean
EPISODE_LIMIT = 1000  # Heist ends an episode after this many steps


def heist_config(config: PPOConfig, seed: int) -> HeistConfig:
    return HeistConfig(config.num_envs, config.distribution_mode, config.num_levels, config.start_level, seed)


def rollout(
    trainer: Trainer, state: TrainState, env: HeistEnv, obs: np.ndarray
) -> tuple[TrainState, Transition, jax.Array, np.ndarray, Episodes]:
    """``num_steps`` steps of every env with the current policy: (state, trajectory, last value, next obs, the
    episodes that ended)."""
    cfg = trainer.config
    key, keys = _split_keys(jax.random.wrap_key_data(state.key), cfg.num_steps + 1)
    first = env.steps

    def act(frames: np.ndarray, t: int):
        action, logp, value = trainer.policy_step(state.params, frames, keys[t - first])
        return action, (logp, value)

    normalizer, steps, ended = state.normalizer, [], []
    for step in step_policy(env, act, obs=obs, steps=cfg.num_steps):
        reward = step.reward
        if cfg.normalize_rewards:
            normalizer, reward = normalizer.update(reward, step.done, cfg.gamma)
        steps.append(Transition(step.obs, step.actions, *step.output, reward, step.done))
        ended.append(step.episodes)
        obs = step.next_obs
    last_value = trainer.policy_step(state.params, obs, keys[-1])[2]
    traj = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *steps)
    state = state._replace(key=jax.random.key_data(key), normalizer=normalizer)
    return state, traj, last_value, obs, Episodes.concatenate(ended)


def _split_keys(key: jax.Array, n: int) -> tuple[jax.Array, list[jax.Array]]:
    """``n`` keys split off ``key`` one at a time (``key, k = split(key)``), and the key left: the order PPO's
    rollouts have always drawn them in, so that a run resumes exactly."""
    keys = []
    for _ in range(n):
        key, k = jax.random.split(key)
        keys.append(k)
    return key, keys


def _save_checkpoint(run_dir: Path, state: TrainState, env_state: HeistState, obs: np.ndarray) -> Path:
    """``checkpoints/iter_NNNNNN``: the train state (orbax), the envs' state and observations (npz); the oldest
    beyond `KEEP_CHECKPOINTS` are deleted."""
    import orbax.checkpoint as ocp

    final = run_dir / CHECKPOINTS / f"iter_{int(state.iteration):06d}"
    if final.exists():
        return final
    with atomic_path(final, directory=True) as tmp:  # a checkpoint exists whole or not at all
        with ocp.StandardCheckpointer() as ckpt:
            ckpt.save(tmp.absolute() / STATE_DIR, jax.tree.map(np.asarray, state))
        np.savez(tmp / ENVS_FILE, obs=obs, **env_state.to_arrays())
    for old in checkpoints(run_dir)[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old)
    shutil.rmtree(
        run_dir / CHECKPOINTS / "init", ignore_errors=True
    )  # a forked run's starting point, now superseded
    return final


def _load_checkpoint(path: Path, template: TrainState) -> tuple[TrainState, HeistState, np.ndarray]:
    """A checkpoint's train state (in ``template``'s structure), envs' state and observations."""
    import orbax.checkpoint as ocp

    target = jax.tree.map(np.asarray, template)
    with ocp.StandardCheckpointer() as ckpt:
        state = ckpt.restore(path.absolute() / STATE_DIR, target)
    state = TrainState(*state) if not isinstance(state, TrainState) else state
    with np.load(path / ENVS_FILE) as f:
        arrays = dict(f)
    return state, HeistState.from_arrays(arrays), arrays["obs"]


def train(
    config: PPOConfig,
    run_dir: str | Path,
    *,
    frames: int,
    seed: int = 0,
    checkpoint_every_s: float = 300.0,
    progress: bool = True,
    init_from: str | Path | None = None,
) -> TrainState:
    """Train until ``frames`` environment frames in total, resuming from ``run_dir`` if it holds a run.

    ``init_from`` starts a new run from another run's latest checkpoint (params, optimizer, reward normalizer, frame
    count and its metrics; fresh environments): the way to go on with another config, since a run refuses config
    changes. The source and its iteration are recorded in ``config.json``.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    run_meta = _run_meta(config, run_dir, seed, init_from)
    trainer = make_train(config)
    env = HeistEnv(heist_config(config, seed))
    state, obs = _start(trainer, env, run_dir, run_meta, seed)
    history = _read_log(run_dir / METRICS_FILE, upto=int(state.iteration))
    recent = collections.deque(maxlen=EPISODE_WINDOW)
    for row in history[-EPISODE_WINDOW:]:
        recent.extend(zip(row.get("_returns", []), row.get("_successes", [])))

    consistent = (state, env.get_state(), obs)  # the last point a checkpoint may be taken from
    last_save = time.monotonic()
    desc = f"PPO {config.arch} on {len(trainer.devices)} {trainer.devices[0].platform} device(s)"
    bar = progress_bar(
        frames, desc=desc, unit="frame", enabled=progress, initial=min(int(state.frames), frames)
    )
    curve = functools.partial(
        save_learning_curve, path=run_dir / "learning_curve.png", ppo=dataclasses.asdict(config)
    )
    previous = {sig: signal.signal(sig, _interrupt_once) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while int(state.frames) < frames:
            state, obs, row = _iteration(trainer, state, env, obs, recent)
            history.append(row)
            with (run_dir / METRICS_FILE).open("a") as f:
                f.write(json.dumps(row) + "\n")
            consistent = (state, env.get_state(), obs)
            bar.update(config.frames_per_iteration)
            bar.set_postfix(
                ret=f"{row['episode_return']:.2f}", succ=f"{row['success_rate']:.0%}", fps=f"{row['fps']:.0f}"
            )
            if time.monotonic() - last_save > checkpoint_every_s:
                _save_checkpoint(run_dir, *consistent)
                curve(history)
                last_save = time.monotonic()
    except KeyboardInterrupt:
        bar.write("interrupted: saving the last completed iteration; rerun the same command to resume")
    finally:
        _ignore_signals()  # however the loop ended, nothing may cut the last save short
        try:
            bar.close()
            _save_checkpoint(run_dir, *consistent)
            curve(history)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            env.close()
    return consistent[0]


def _run_meta(config: PPOConfig, run_dir: Path, seed: int, init_from: str | Path | None) -> dict:
    """What ``config.json`` records of the run (written on its first start): a resumed run must match it."""
    saved = run_dir / CONFIG_FILE
    run_meta = {"ppo": config.to_dict(), "seed": seed}
    if init_from is not None and not saved.exists():
        run_meta["init_from"] = _fork(Path(init_from), run_dir, config)
    if not saved.exists():
        write_text(saved, json.dumps(run_meta, indent=2))
        return run_meta
    run_meta = json.loads(saved.read_text())
    ppo = PPOConfig.from_dict(run_meta["ppo"])
    if ppo.algorithm_dict() != config.algorithm_dict() or run_meta["seed"] != seed:
        raise JaxinterpError(
            f"{run_dir} holds a run with another config or seed ({run_meta}); use a new --out directory "
            "or the same settings to resume it"
        )
    return run_meta


def _start(
    trainer: Trainer, env: HeistEnv, run_dir: Path, run_meta: dict, seed: int
) -> tuple[TrainState, np.ndarray]:
    """The state and observations to train from: the run's latest checkpoint (its envs restored into ``env``), a
    forked run's source checkpoint with fresh envs, or a fresh start."""
    config = trainer.config
    state = trainer.init(jax.random.key(seed))
    obs = env.observe()
    if (latest := latest_checkpoint(run_dir)) is not None:
        state, env_state, obs = _load_checkpoint(latest, state)
        env.set_state(env_state)
    elif (source := run_meta.get("init_from")) is not None:
        # The source may step another number of envs; the fork's envs are fresh, so each starts its running
        # discounted return at zero while the normalizer's statistics carry over.
        n_source = source.get("num_envs", config.num_envs)
        template = state._replace(normalizer=RewardNormalizer.create(n_source))
        state = _load_checkpoint(run_dir / CHECKPOINTS / source["checkpoint"], template)[0]
        state = state._replace(normalizer=state.normalizer._replace(returns=np.zeros(config.num_envs)))
    return state, obs


def _iteration(
    trainer: Trainer, state: TrainState, env: HeistEnv, obs: np.ndarray, recent: collections.deque
) -> tuple[TrainState, np.ndarray, dict]:
    """One PPO iteration (a rollout and an update): the new state and observations, and its metrics row;
    ``recent`` takes the (return, success) of the episodes that ended."""
    config = trainer.config
    t0 = time.monotonic()
    state, traj, last_value, obs, episodes = rollout(trainer, state, env, obs)
    t_roll = time.monotonic()
    state, metrics = trainer.update(state, traj, last_value)
    metrics = {k: float(v) for k, v in metrics.items()}
    state = state._replace(iteration=state.iteration + 1, frames=state.frames + config.frames_per_iteration)
    recent.extend(zip(episodes.episode_return.tolist(), episodes.success.tolist()))
    t1 = time.monotonic()
    row = {
        "iteration": int(state.iteration),
        "frames": int(state.frames),
        "fps": config.frames_per_iteration / (t1 - t0),
        "rollout_s": t_roll - t0,
        "update_s": t1 - t_roll,
        "episodes": len(episodes.episode_return),
        "episode_return": _mean([r for r, _ in recent]),
        "success_rate": _mean([s for _, s in recent]),
        "episode_length": _mean(episodes.length.tolist()),
        **metrics,
        "_returns": episodes.episode_return.tolist(),
        "_successes": episodes.success.tolist(),
    }
    return state, obs, row


def _fork(source: Path, run_dir: Path, config: PPOConfig) -> dict:
    """Copy ``source``'s latest checkpoint and metrics into the new ``run_dir``; what config.json records of it."""
    if not (source / CONFIG_FILE).exists():
        raise JaxinterpError(f"--init-from {source}: not a training run (no {CONFIG_FILE})")
    meta = json.loads((source / CONFIG_FILE).read_text())
    source_config = PPOConfig.from_dict(meta["ppo"])
    if (arch := source_config.arch) != config.arch:
        raise JaxinterpError(
            f"--init-from {source}: it trains {arch!r}, this run {config.arch!r}; use the same --arch"
        )

    def copy(latest: Path) -> Path:
        # Whole or not at all: the source may delete this checkpoint while it is being copied (then try the next).
        with atomic_path(run_dir / CHECKPOINTS / "init" / latest.name, directory=True) as tmp:
            shutil.copytree(latest, tmp, dirs_exist_ok=True)
        return latest

    latest = with_latest(source, copy)
    if latest is None:
        raise JaxinterpError(f"--init-from {source}: it has no checkpoint yet")
    iteration = int(latest.name.split("_")[1])
    _write_log(run_dir / METRICS_FILE, logged_rows(source / METRICS_FILE, iteration))
    return {
        "run": source.as_posix(),
        "checkpoint": f"init/{latest.name}",
        "iteration": iteration,
        "num_envs": source_config.num_envs,
    }


def _ignore_signals() -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)


def _interrupt_once(*_):
    """The first SIGTERM or Ctrl-C stops the loop; later ones (a second Ctrl-C; `uv run` forwarding the SIGTERM that
    `pkill -f` also sent to the python process) are ignored until the last checkpoint is written, since cut short
    it would lose the iterations since the previous one."""
    _ignore_signals()
    raise KeyboardInterrupt


def _mean(xs) -> float:
    return float(np.mean(xs)) if len(xs) else float("nan")


def logged_rows(path: Path, upto: int) -> list[dict]:
    """The rows of the metrics log ``path`` up to iteration ``upto``."""
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["iteration"] <= upto]


def _write_log(path: Path, rows: list[dict]) -> None:
    write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def _read_log(path: Path, upto: int) -> list[dict]:
    """Rows logged up to the checkpointed iteration; later rows (from after the last checkpoint) are dropped."""
    rows = logged_rows(path, upto)
    if path.exists():
        _write_log(path, rows)
    return rows


def save_learning_curve(history: list[dict], path: Path, ppo: dict) -> BaselineCurve | None:
    """`plot_learning_curve` with a run's own settings (``ppo``, as in its config.json): frames shaded until every
    env has finished one episode, and the PPO baseline's curve when the run plays its game; returns that curve."""
    baseline = baseline_curve() if has_baseline(ppo) else None
    plot_learning_curve(history, path, warmup_frames=ppo["num_envs"] * EPISODE_LIMIT, baseline=baseline)
    return baseline


def plot_learning_curve(
    history: list[dict], path: Path, *, warmup_frames: int = 0, baseline: BaselineCurve | None = None
) -> None:
    """Episode return and success rate against frames: the logged last-100 mean (faint) and a smoother mean over
    the last ``CURVE_WINDOW`` episodes (bold), with policy entropy beside them; with ``baseline``, the published
    PPO curve on each panel (mean over its seeds, their spread shaded for the return).

    Frames before ``warmup_frames`` are shaded: until every env has played one full episode (Heist's 1000-step
    limit), the episodes that have finished are mostly the short, successful ones, so the curve starts too high.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    frames = np.array([r["frames"] for r in history])
    ends = np.cumsum([len(r.get("_returns", [])) for r in history])
    starts = np.maximum(ends - CURVE_WINDOW, 0)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    for ax, key, episodes, label in zip(
        axes,
        ("episode_return", "success_rate", "entropy"),
        ("_returns", "_successes", None),
        ("episode return", "success rate", "policy entropy"),
    ):
        if episodes is None:
            ax.plot(frames, [r[key] for r in history], label="this run")
        else:
            ax.plot(frames, [r[key] for r in history], alpha=0.3, label=f"last {EPISODE_WINDOW} episodes")
            values = np.concatenate([np.asarray(r.get(episodes, []), np.float64) for r in history])
            csum = np.concatenate([[0.0], np.cumsum(values)])
            with np.errstate(invalid="ignore", divide="ignore"):
                ax.plot(
                    frames,
                    (csum[ends] - csum[starts]) / (ends - starts),
                    label=f"last {CURVE_WINDOW} episodes",
                )
        if baseline is not None:
            b = {"episode_return": baseline.return_mean, "success_rate": baseline.success_mean}.get(
                key, baseline.entropy_mean
            )
            ax.plot(
                baseline.frames,
                b,
                color="0.35",
                linestyle="--",
                label="PPO baseline (train-procgen, 3 seeds)",
            )
            if key == "episode_return":
                spread = (
                    baseline.return_mean - baseline.return_std,
                    baseline.return_mean + baseline.return_std,
                )
                ax.fill_between(baseline.frames, *spread, color="0.35", alpha=0.15, linewidth=0)
        if episodes is not None or baseline is not None:
            ax.legend(fontsize=7, loc="best")  # never over the curves
        if warmup_frames:
            ax.axvspan(0, min(warmup_frames, frames[-1]), color="0.88", zorder=0)
        ax.set_xlabel("frames")
        ax.xaxis.set_major_formatter(lambda x, _: f"{x / 1e6:g}M")  # plain numbers overlap below 1e6
        ax.set_title(label)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
