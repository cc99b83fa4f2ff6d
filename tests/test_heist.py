"""HeistConfig validation and the HeistEnv wrapper: step semantics, episode bookkeeping, exact state restore."""

import numpy as np
import pytest

from jaxinterp.envs.heist import NUM_ACTIONS, SUCCESS_REWARD, HeistConfig, HeistEnv, HeistState
from jaxinterp.errors import JaxinterpError


@pytest.mark.parametrize(
    "fields",
    [
        {"num_envs": 0},
        {"num_envs": True},
        {"num_envs": 2.0},
        {"distribution_mode": "memory"},
        {"num_levels": -1},
        {"start_level": -3},
        {"seed": 2**31},
    ],
)
def test_config_rejects_bad_values(fields):
    with pytest.raises(JaxinterpError, match=next(iter(fields))):
        HeistConfig(**fields)


def test_config_dict_round_trip():
    config = HeistConfig(num_envs=3, distribution_mode="hard", num_levels=200, start_level=7, seed=5)
    assert HeistConfig.from_dict(config.to_dict()) == config
    with pytest.raises(JaxinterpError, match="unknown HeistConfig fields"):
        HeistConfig.from_dict({**config.to_dict(), "env_name": "heist"})


def _play(env, actions):
    """Step through `actions` (steps, num_envs); return every output plus the ids each obs belonged to."""
    out = []
    for a in actions:
        ids = env.episode_id.copy()
        obs, reward, done, info = env.step(a)
        out.append((ids, obs, reward, done, info))
    return out


def test_step_semantics_and_episode_stats():
    env = HeistEnv(HeistConfig(num_envs=2, seed=1))
    assert env.observe().shape == (2, 64, 64, 3) and env.observe().dtype == np.uint8
    np.testing.assert_array_equal(env.episode_id, [0, 1])
    # Heist times out after 1000 steps, so 1001 steps end at least one episode per env.
    actions = np.random.default_rng(0).integers(0, NUM_ACTIONS, (1001, 2))
    steps = _play(env, actions)
    episodes = env.pop_episodes()
    assert len(env.pop_episodes().episode_id) == 0  # popped once
    assert set(episodes.env.tolist()) == {0, 1}

    ids = np.stack([s[0] for s in steps])
    rewards = np.stack([s[2] for s in steps])
    dones = np.stack([s[3] for s in steps])
    assert rewards.dtype == np.float32 and dones.dtype == bool
    assert set(np.unique(rewards)) <= {0.0, SUCCESS_REWARD}
    assert np.all(dones[rewards > 0])  # Heist only pays at the gem, which ends the episode
    # done exactly where the next observation starts a new episode id
    np.testing.assert_array_equal(dones[:-1], ids[1:] != ids[:-1])
    for k, episode_id in enumerate(episodes.episode_id):
        rows = ids[:, episodes.env[k]] == episode_id
        assert episodes.length[k] == rows.sum() <= 1000
        assert episodes.first_step[k] == np.argmax(rows)
        assert episodes.episode_return[k] == rewards[rows, episodes.env[k]].sum()
        assert episodes.success[k] == (episodes.episode_return[k] == SUCCESS_REWARD)
    assert np.all(episodes.complete)
    new_ids = sorted(set(ids.ravel().tolist()) | set(env.episode_id.tolist()))
    assert new_ids == list(range(len(new_ids)))  # ids are handed out densely from 0

    summary = episodes.summary()
    assert summary.num_episodes == len(episodes.episode_id)
    assert summary.success_rate == pytest.approx(episodes.success.mean())


def test_bad_actions_are_rejected():
    env = HeistEnv(HeistConfig(num_envs=2))
    with pytest.raises(JaxinterpError, match="shape"):
        env.step(np.zeros(3, np.int32))
    with pytest.raises(JaxinterpError, match=r"\[0, 15\)"):
        env.step(np.array([0, 15]))


def test_same_seed_same_levels_and_state_restores_exactly(tmp_path):
    config = HeistConfig(num_envs=3, seed=4)
    actions = np.random.default_rng(1).integers(0, NUM_ACTIONS, (300, 3))
    a, b = HeistEnv(config), HeistEnv(config)
    np.testing.assert_array_equal(a.level_seed, b.level_seed)
    assert not np.array_equal(a.level_seed, HeistEnv(HeistConfig(num_envs=3, seed=5)).level_seed)

    _play(a, actions[:100])
    np.savez(tmp_path / "s.npz", **a.get_state().to_arrays())
    with np.load(tmp_path / "s.npz") as arrays:
        state = HeistState.from_arrays(arrays)
    expected = _play(a, actions[100:])

    b.set_state(state)
    assert b.steps == 100
    got = _play(b, actions[100:])
    for x, y in zip(expected, got, strict=True):
        for u, v in zip(x[:4], y[:4], strict=True):
            np.testing.assert_array_equal(u, v)
    np.testing.assert_array_equal(a.pop_episodes().episode_return, b.pop_episodes().episode_return)

    with pytest.raises(JaxinterpError, match="same HeistConfig"):
        HeistEnv(HeistConfig(num_envs=2)).set_state(state)


def test_keep_only_continues_the_chosen_envs_exactly():
    config = HeistConfig(num_envs=4, seed=2)
    actions = np.random.default_rng(3).integers(0, NUM_ACTIONS, (200, 4))
    a, b = HeistEnv(config), HeistEnv(config)
    _play(a, actions[:60])
    _play(b, actions[:60])
    ids = b.episode_id.copy()
    kept = b.keep_only([3, 1])
    assert kept.num_envs == 2 and kept.steps == 60 and kept.config.seed == 2
    np.testing.assert_array_equal(kept.observe(), a.observe()[[3, 1]])
    np.testing.assert_array_equal(kept.episode_id, ids[[3, 1]])
    expected = _play(a, actions[60:])
    got = _play(kept, actions[60:, [3, 1]])
    for x, y in zip(
        expected, got, strict=True
    ):  # frames, rewards, ends (new episodes' ids are this env's own)
        for u, v in zip(x[1:4], y[1:4], strict=True):
            np.testing.assert_array_equal(u[[3, 1]], v)
