"""step_policy: what each step holds, the caller stops it, and every caller's figures equal its previous own loop."""

import math

import jax
import numpy as np
import pytest

import jaxinterp
from jaxinterp.envs.heist import HeistConfig, HeistEnv
from jaxinterp.envs.rollout import agent_policy, random_policy
from jaxinterp.envs.stepping import keyed, step_policy
from jaxinterp.rl import evaluate as evaluate_module
from jaxinterp.rl.export import agent_frames
from jaxinterp.weights.store import default_checkpoint

CONFIG = HeistConfig(num_envs=3, seed=4)


def test_each_step_holds_what_the_policy_saw_and_the_env_answered():
    policy = keyed(random_policy(), jax.random.key(1))
    env, reference = HeistEnv(CONFIG), HeistEnv(CONFIG)
    obs = reference.observe()
    steps = list(step_policy(env, policy, steps=40, objects=True))
    for t, step in enumerate(steps):
        assert step.t == t
        np.testing.assert_array_equal(step.obs, obs)
        np.testing.assert_array_equal(step.episode_id, reference.episode_id)
        np.testing.assert_array_equal(step.level_seed, reference.level_seed)
        np.testing.assert_array_equal(step.objects, reference.object_maps())
        actions = np.asarray(policy(obs, t)[0])
        np.testing.assert_array_equal(step.actions, actions)
        obs, reward, done, info = reference.step(actions)
        np.testing.assert_array_equal(step.next_obs, obs)
        np.testing.assert_array_equal(step.reward, reward)
        np.testing.assert_array_equal(step.done, done)
        for key in info:
            np.testing.assert_array_equal(step.info[key], info[key])
        for mine, theirs in zip(step.episodes, reference.pop_episodes(), strict=True):
            np.testing.assert_array_equal(mine, theirs)
    assert env.steps == 40 and steps[0].objects is not None
    env.close()
    reference.close()


def test_nothing_is_stepped_ahead_of_the_caller():
    env = HeistEnv(CONFIG)
    calls = []

    def policy(obs, t):
        calls.append(t)
        return np.zeros(len(obs), np.int32), None

    for step in step_policy(env, policy):  # unbounded: the caller stops it
        if step.t == 4:
            break
    assert env.steps == 5 and calls == [0, 1, 2, 3, 4]
    (step,) = step_policy(env, policy, steps=1)  # goes on from where the envs are
    assert step.t == 5 and step.objects is None
    env.close()


def _old_run_episodes(policy, config, episodes, seed):
    """`run_episodes` as it was written before `step_policy`: its own stepping loop."""
    per_env = math.ceil(episodes / config.num_envs)
    env = HeistEnv(config)
    obs = env.observe()
    key = jax.random.key(seed)
    done_count = np.zeros(config.num_envs, int)
    returns, successes, lengths = ([[] for _ in range(config.num_envs)] for _ in range(3))
    t = 0
    while (done_count < per_env).any():
        actions, _ = policy(jax.random.fold_in(key, t), obs)
        obs, _, _, _ = env.step(np.asarray(actions))
        t += 1
        finished = env.pop_episodes()
        for i, r, s, n in zip(finished.env, finished.episode_return, finished.success, finished.length):
            if done_count[i] < per_env:
                returns[i].append(float(r))
                successes[i].append(bool(s))
                lengths[i].append(int(n))
                done_count[i] += 1
    env.close()
    order = [(k, i) for k in range(per_env) for i in range(config.num_envs)][:episodes]
    r = np.array([returns[i][k] for k, i in order])
    s = np.array([successes[i][k] for k, i in order], float)
    n = np.array([lengths[i][k] for k, i in order])
    sem = lambda x: evaluate_module.Z_95 * x.std(ddof=1) / math.sqrt(len(x)) if len(x) > 1 else float("nan")
    return evaluate_module.Evaluation(
        len(r), float(r.mean()), float(sem(r)), float(s.mean()), float(sem(s)), float(n.mean())
    )


@pytest.mark.slow
def test_evaluation_and_frames_are_what_their_own_loops_gave():
    agent = jaxinterp.load_agent(default_checkpoint())
    config = evaluate_module.level_config("unseen", num_envs=3, seed=0)
    for policy in (agent_policy(agent), random_policy()):
        new = evaluate_module.run_episodes(policy, config, 5, seed=0, progress=False)
        assert new == _old_run_episodes(policy, config, 5, seed=0)
        assert new.episodes == 5

    env = HeistEnv(evaluate_module.level_config("unseen", num_envs=3, seed=2))
    policy, key, obs, frames = agent_policy(agent), jax.random.key(2), env.observe(), []
    for t in range(7):  # agent_frames' previous loop
        frames.append(obs)
        obs = env.step(np.asarray(policy(jax.random.fold_in(key, t), obs)[0]))[0]
    env.close()
    np.testing.assert_array_equal(agent_frames(agent, 20, seed=2, num_envs=3), np.concatenate(frames)[:20])
