"""PPO: GAE by hand, jitted update vs an unjitted reference, scan vs loop, end-to-end tiny run, exact resume."""

import dataclasses
import json
import os
import shutil
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tqdm import tqdm

from jaxinterp.envs.heist import HeistEnv
from jaxinterp.errors import JaxinterpError
from jaxinterp.rl import ppo as ppo_module
from jaxinterp.rl import train as train_module
from jaxinterp.rl.ppo import (
    PPOConfig,
    RewardNormalizer,
    Transition,
    compute_gae,
    make_train,
    minibatch_data,
)
from jaxinterp.rl.train import heist_config, rollout, train
from jaxinterp.weights.store import load_agent
from jaxinterp.weights.training_run import load_run_agent, with_latest

TINY = PPOConfig(num_envs=2, num_steps=8, num_minibatches=2, update_epochs=2)


def test_gae_matches_hand_computed_example():
    # one env, three steps; the episode ends after step 1 (index 1)
    r, v, d = [1.0, 2.0, 3.0], [0.5, 1.0, 1.5], [0.0, 1.0, 0.0]
    last, g, lam = 2.0, 0.9, 0.8
    delta2 = r[2] + g * last - v[2]
    delta1 = r[1] - v[1]  # terminal: no bootstrap
    delta0 = r[0] + g * v[1] - v[0]
    a2 = delta2
    a1 = delta1
    a0 = delta0 + g * lam * a1
    traj = Transition(
        None, None, None, jnp.array(v)[:, None], jnp.array(r)[:, None], jnp.array(d)[:, None] > 0
    )
    adv, ret = compute_gae(traj, jnp.array([last]), g, lam)
    np.testing.assert_allclose(adv[:, 0], [a0, a1, a2], rtol=1e-6)
    np.testing.assert_allclose(ret[:, 0], np.array([a0, a1, a2]) + v, rtol=1e-6)


def _fake_traj(trainer, key):
    c = trainer.config
    k1, k2, k3 = jax.random.split(key, 3)
    obs = jax.random.randint(k1, (c.num_steps, c.num_envs, 64, 64, 3), 0, 256).astype(jnp.uint8)
    action = jax.random.randint(k2, (c.num_steps, c.num_envs), 0, 15)
    params = trainer.init(jax.random.key(0)).params
    logits, value = jax.vmap(lambda o: trainer.agent.apply(params, o))(obs)
    logp = jnp.take_along_axis(jax.nn.log_softmax(logits), action[..., None], -1)[..., 0]
    reward = jax.random.uniform(k3, (c.num_steps, c.num_envs))
    done = jnp.zeros((c.num_steps, c.num_envs), bool).at[3, 0].set(True)
    return Transition(obs, action, logp, value, reward, done)


def test_jitted_minibatch_step_equals_unjitted_reference():
    trainer = make_train(TINY)
    state = trainer.init(jax.random.key(1))
    traj = _fake_traj(trainer, jax.random.key(2))
    mb = {
        "obs": traj.obs[0],
        "action": traj.action[0],
        "logp": traj.logp[0],
        "value": traj.value[0],
        "adv": traj.reward[0] - 0.5,
        "ret": traj.reward[0],
    }
    jitted = jax.jit(trainer.minibatch_step)(state.params, state.opt_state, mb)
    with jax.disable_jit():
        ref = trainer.minibatch_step(state.params, state.opt_state, mb)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), jitted, ref)


def test_microbatched_minibatch_step_equals_one_pass():
    traj = _fake_traj(make_train(TINY), jax.random.key(2))
    mb = jax.tree.map(lambda x: x[:8], minibatch_data(traj, traj.reward - 0.5, traj.reward))
    results, acts = [], []
    for size in (8, 2):  # TINY's minibatch holds 8 frames: one pass, then 4 micro-batches of 2
        trainer = make_train(dataclasses.replace(TINY, microbatch_size=size))
        assert trainer.config.microbatches == 8 // size
        state = trainer.init(jax.random.key(1))
        results.append(jax.jit(trainer.minibatch_step)(state.params, state.opt_state, mb))
        acts.append(trainer.policy_step(state.params, mb["obs"], jax.random.key(3)))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), *results)
    np.testing.assert_array_equal(acts[0][0], acts[1][0])  # same actions sampled
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), *acts)


def test_scanned_update_equals_host_loop_of_minibatch_steps():
    trainer = make_train(TINY)
    state = trainer.init(jax.random.key(1))
    traj = _fake_traj(trainer, jax.random.key(2))
    last_value = jnp.zeros(TINY.num_envs)
    new_state, metrics = trainer.update(state, traj, last_value)

    # the same epochs and permutations, stepped one minibatch at a time from the host
    adv, ret = compute_gae(traj, last_value, TINY.gamma, TINY.gae_lambda)
    flat = minibatch_data(traj, adv, ret)
    _, k_epochs = jax.random.split(jax.random.wrap_key_data(state.key))
    params, opt_state = state.params, state.opt_state
    step = jax.jit(trainer.minibatch_step)
    for k in jax.random.split(k_epochs, TINY.update_epochs):
        for idx in jax.random.permutation(k, TINY.frames_per_iteration).reshape(TINY.num_minibatches, -1):
            params, opt_state, _ = step(params, opt_state, jax.tree.map(lambda x, i=idx: x[i], flat))
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), new_state.params, params
    )
    explained = 1 - np.var(np.asarray(ret - traj.value)) / np.var(np.asarray(ret))
    np.testing.assert_allclose(metrics["explained_variance"], explained, rtol=1e-4, atol=1e-6)


def test_updates_make_the_rewarded_actions_more_likely():
    # A bandit on Heist-shaped frames: actions 0-6 earn 1, the others 0, every step ends its episode. PPO must move
    # probability mass onto the rewarded actions (a wrong sign or a misaligned advantage would move it away).
    config = dataclasses.replace(TINY, num_envs=8, ent_coef=0.0, lr=1e-3, normalize_rewards=False)
    trainer = make_train(config)
    state = trainer.init(jax.random.key(5))
    obs = jax.random.randint(jax.random.key(6), (config.num_steps, config.num_envs, 64, 64, 3), 0, 256)
    obs = obs.astype(jnp.uint8)

    def rewarded_mass(params):
        logits, _ = trainer.agent.apply(params, obs.reshape(-1, 64, 64, 3))
        return float(jax.nn.softmax(logits)[:, :7].sum(-1).mean())

    before = rewarded_mass(state.params)
    for i in range(8):
        keys = jax.random.split(jax.random.key(100 + i), config.num_steps)
        action, logp, value = jax.vmap(trainer.policy_step, (None, 0, 0))(state.params, obs, keys)
        reward = (action < 7).astype(jnp.float32)
        done = jnp.ones_like(reward, bool)
        state, _ = trainer.update(state, Transition(obs, action, logp, value, reward, done), value[-1])
    assert rewarded_mass(state.params) > before + 0.1, (before, rewarded_mass(state.params))


def test_reward_normalizer_matches_running_statistics():
    norm = RewardNormalizer.create(2)
    rets, seen = np.zeros(2), []
    rng = np.random.default_rng(0)
    for _ in range(50):
        r = rng.normal(size=2)
        norm, scaled = norm.update(r, np.zeros(2, bool), 0.9)
        rets = rets * 0.9 + r
        seen.extend(rets)
    np.testing.assert_allclose(norm.var, np.var(seen), rtol=0.02)
    np.testing.assert_allclose(scaled, np.clip(r / np.sqrt(norm.var + 1e-8), -10, 10), rtol=1e-5)


def test_config_errors():
    with pytest.raises(JaxinterpError, match="divisible"):
        PPOConfig(num_envs=3, num_steps=5, num_minibatches=2)
    with pytest.raises(JaxinterpError, match="valid keys"):
        PPOConfig.from_dict({"learning_rate": 1.0})
    with pytest.raises(JaxinterpError, match="unknown architecture"):
        PPOConfig(arch="resnet")
    with pytest.raises(JaxinterpError, match="microbatch_size must divide the minibatch size 8"):
        PPOConfig(num_envs=2, num_steps=8, num_minibatches=2, microbatch_size=3)


@pytest.mark.slow
def test_tiny_run_trains_end_to_end_and_resume_is_exact(tmp_path):
    frames = 3 * TINY.frames_per_iteration
    straight = train(TINY, tmp_path / "a", frames=frames, seed=3, progress=False)
    train(TINY, tmp_path / "b", frames=TINY.frames_per_iteration, seed=3, progress=False)
    resumed = train(TINY, tmp_path / "b", frames=frames, seed=3, progress=False)
    assert int(straight.frames) == int(resumed.frames) == frames
    jax.tree.map(np.testing.assert_array_equal, straight.params, resumed.params)
    rows = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2, 3]
    assert all(np.isfinite(r["policy_loss"]) and r["entropy"] > 0 for r in rows)
    assert (tmp_path / "b" / "learning_curve.png").exists()
    agent, meta = load_run_agent(tmp_path / "b")
    jax.tree.map(np.testing.assert_array_equal, agent.params, resumed.params)
    assert meta["frames"] == frames
    # an older checkpoint, copied out of the run (as one keeps a good one that training would delete), loads with
    # its own frames and policy; a directory that is no checkpoint is refused
    kept = shutil.copytree(tmp_path / "b" / "checkpoints" / "iter_000001", tmp_path / "kept")
    older, older_meta = load_run_agent(tmp_path / "b", kept)
    assert (older_meta["frames"], older_meta["iteration"]) == (TINY.frames_per_iteration, 1)
    assert not np.array_equal(
        older.params[agent.arch.logits]["kernel"], agent.params[agent.arch.logits]["kernel"]
    )
    with pytest.raises(JaxinterpError, match="not a training checkpoint"):
        load_run_agent(tmp_path / "b", tmp_path / "b" / "checkpoints")
    with pytest.raises(JaxinterpError, match="another config"):
        train(TINY, tmp_path / "b", frames=frames, seed=4, progress=False)
    with pytest.raises(JaxinterpError, match="another config"):
        train(dataclasses.replace(TINY, lr=1e-3), tmp_path / "b", frames=frames, seed=3, progress=False)
    # the micro-batch size changes speed, not the math: a run resumes with another one
    again = train(
        dataclasses.replace(TINY, microbatch_size=2), tmp_path / "b", frames=frames, seed=3, progress=False
    )
    jax.tree.map(np.testing.assert_array_equal, again.params, resumed.params)


@pytest.mark.slow
def test_a_second_signal_waits_for_the_last_save(tmp_path, monkeypatch):
    """SIGTERM stops a run at the end of an iteration; another signal during the final save (`uv run` forwards the
    SIGTERM that `pkill -f` also sent to python; a second Ctrl-C) must not cut the save short."""
    trainer = make_train(TINY)
    real_save, saved, updates = train_module._save_checkpoint, [], []

    def save(*args):
        os.kill(os.getpid(), signal.SIGTERM)  # unshielded, the default action kills the process mid-save
        os.kill(os.getpid(), signal.SIGINT)
        saved.append(real_save(*args))
        return saved[-1]

    def update(*args):
        updates.append(1)
        if len(updates) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # the first signal: stop
        return trainer.update(*args)

    closes = []

    class Bar(tqdm):
        def close(self):
            closes.append(1)
            if len(closes) == 1:  # the second signal as the loop winds down; tqdm closes again when collected
                os.kill(os.getpid(), signal.SIGTERM)
            super().close()

    monkeypatch.setattr(train_module, "_save_checkpoint", save)
    monkeypatch.setattr(train_module, "progress_bar", lambda total, **kw: Bar(total=total, disable=True))
    monkeypatch.setattr(train_module, "make_train", lambda config: trainer._replace(update=update))
    # Whatever the handlers were (a shell's background job starts with SIGINT ignored), they are put back.
    before = [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)]
    state = train(TINY, tmp_path, frames=10 * TINY.frames_per_iteration, seed=3, progress=False)
    # The signal came inside the second update: the run stops with the first iteration, and saves it whole.
    assert int(state.iteration) == 1 and [p.name for p in saved] == ["iter_000001"]
    assert (tmp_path / "checkpoints" / "iter_000001" / "env.npz").is_file()
    assert [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)] == before  # both handlers are back


def test_reading_the_latest_checkpoint_survives_its_rotation(tmp_path):
    """A training run deletes older checkpoints as it saves; a reader whose checkpoint vanishes reads the new one."""
    folder = tmp_path / "checkpoints"
    (folder / "iter_000001").mkdir(parents=True)
    (folder / "iter_000003.partial").mkdir()  # a checkpoint being written is not one yet
    read = []

    def use(path):
        read.append(path.name)
        if path.name == "iter_000001":  # meanwhile the trainer saves iter 2 and deletes iter 1
            (folder / "iter_000002").mkdir()
            path.rmdir()
            raise FileNotFoundError(path)
        return path.name

    assert with_latest(tmp_path, use) == "iter_000002" and read == ["iter_000001", "iter_000002"]

    def broken(path):
        raise ValueError("corrupt")

    with pytest.raises(ValueError, match="corrupt"):  # a checkpoint that is still there failed on its own
        with_latest(tmp_path, broken)
    assert with_latest(tmp_path / "empty", use) is None


def test_a_forked_run_starts_from_its_source_with_another_config(tmp_path):
    """A run refuses config changes; `init_from` starts a new run from its latest checkpoint instead."""
    source = tmp_path / "source"
    first = train(TINY, source, frames=TINY.frames_per_iteration, seed=3, progress=False)
    other = dataclasses.replace(TINY, lr=1e-3)
    # Nothing to train yet (the source's frames already): the fork's state is the source's.
    fork = train(other, tmp_path / "fork", frames=16, seed=3, progress=False, init_from=source)
    jax.tree.map(np.testing.assert_array_equal, fork.params, first.params)
    assert int(fork.frames) == 16 and int(fork.iteration) == 1
    meta = json.loads((tmp_path / "fork" / "config.json").read_text())
    assert meta["init_from"] == {
        "run": source.as_posix(),
        "checkpoint": "init/iter_000001",
        "iteration": 1,
        "num_envs": TINY.num_envs,
    }
    assert meta["ppo"]["lr"] == 1e-3 and not (tmp_path / "fork" / "checkpoints" / "init").exists()
    on = train(other, tmp_path / "fork", frames=32, seed=3, progress=False)  # then trains on, resumable
    assert int(on.frames) == 32 and not np.allclose(
        on.params["logits_fc"]["kernel"], first.params["logits_fc"]["kernel"]
    )
    rows = [json.loads(x) for x in (tmp_path / "fork" / "metrics.jsonl").read_text().splitlines()]
    assert [r["frames"] for r in rows] == [16, 32]  # the source's history, then the fork's
    # Another number of envs: the normalizer's statistics carry over, the fresh envs' running returns start at 0.
    wide = dataclasses.replace(TINY, num_envs=2 * TINY.num_envs, num_steps=TINY.num_steps // 2)
    forked = train(wide, tmp_path / "wide", frames=16, seed=3, progress=False, init_from=source)
    assert forked.normalizer.returns.shape == (wide.num_envs,) and not forked.normalizer.returns.any()
    np.testing.assert_array_equal(forked.normalizer.var, first.normalizer.var)
    assert int(train(wide, tmp_path / "wide", frames=32, seed=3, progress=False).frames) == 32
    with pytest.raises(JaxinterpError, match="same --arch"):
        train(
            dataclasses.replace(TINY, arch="interpretable-cnn"),
            tmp_path / "x",
            frames=16,
            progress=False,
            init_from=source,
        )


def _old_rollout(trainer, state, env, obs):
    """PPO's rollout as it was written before `step_policy`: its own stepping loop, a key split off per step."""
    cfg = trainer.config
    key = jax.random.wrap_key_data(state.key)
    normalizer, steps = state.normalizer, []
    for _ in range(cfg.num_steps):
        key, k = jax.random.split(key)
        action, logp, value = trainer.policy_step(state.params, obs, k)
        next_obs, reward, done, _ = env.step(np.asarray(action))
        if cfg.normalize_rewards:
            normalizer, reward = normalizer.update(reward, done, cfg.gamma)
        steps.append(Transition(obs, action, logp, value, reward, done))
        obs = next_obs
    key, k = jax.random.split(key)
    last_value = trainer.policy_step(state.params, obs, k)[2]
    traj = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *steps)
    return state._replace(key=jax.random.key_data(key), normalizer=normalizer), traj, last_value, obs


def test_rollout_is_the_previous_per_step_loop():
    """Bit for bit, twice in a row (the envs and the key carry over): a run resumes exactly across the change."""
    trainer = make_train(TINY)
    state = trainer.init(jax.random.key(4))
    envs = [HeistEnv(heist_config(TINY, 1)) for _ in range(2)]
    new, old = (state, envs[0].observe()), (state, envs[1].observe())
    for _ in range(2):
        *out_new, episodes = rollout(trainer, *new[:1], envs[0], new[1])
        out_old = _old_rollout(trainer, *old[:1], envs[1], old[1])
        jax.tree.map(np.testing.assert_array_equal, tuple(out_new), tuple(out_old))
        ended = envs[1].pop_episodes()
        jax.tree.map(np.testing.assert_array_equal, tuple(episodes), tuple(ended))
        new, old = (out_new[0], out_new[3]), (out_old[0], out_old[3])
    jax.tree.map(np.testing.assert_array_equal, envs[0].get_state(), envs[1].get_state())
    for env in envs:
        env.close()


def test_a_run_loads_without_its_trainer(tmp_path, monkeypatch):
    """Loading reads the params from the checkpoint: no trainer, no device mesh, so a run trained on 2 devices
    loads on 1."""
    state = train(TINY, tmp_path, frames=TINY.frames_per_iteration, seed=3, progress=False)
    meta = json.loads((tmp_path / "config.json").read_text())
    meta["ppo"]["devices"] = 2  # more than this process has: building its trainer would fail
    (tmp_path / "config.json").write_text(json.dumps(meta))

    def no_trainer(config):
        raise AssertionError("loading a run built a trainer")

    monkeypatch.setattr(ppo_module, "make_train", no_trainer)
    monkeypatch.setattr(train_module, "make_train", no_trainer)
    agent, loaded = load_run_agent(tmp_path)
    jax.tree.map(np.testing.assert_array_equal, agent.params, jax.tree.map(np.asarray, state.params))
    assert (loaded["frames"], loaded["iteration"], agent.num_actions) == (16, 1, 15)
    jax.tree.map(np.testing.assert_array_equal, load_agent(tmp_path).params, agent.params)
    (tmp_path / "new").mkdir()
    with pytest.raises(JaxinterpError, match="not a training run"):
        load_run_agent(tmp_path / "new")
    (tmp_path / "new" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(JaxinterpError, match="no checkpoint yet"):
        load_run_agent(tmp_path / "new")
