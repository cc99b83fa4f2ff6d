"""collect(): what a row holds, reproducibility, resuming (after a stop or Ctrl-C), and its errors."""

import os
import signal

import jax
import numpy as np
import pytest

from jaxinterp.envs.dataset import Dataset
from jaxinterp.envs.ground_truth import OBJECT_CLASSES
from jaxinterp.envs.heist import SUCCESS_REWARD, HeistConfig
from jaxinterp.envs.rollout import collect, random_policy
from jaxinterp.errors import JaxinterpError

CONFIG = HeistConfig(num_envs=4, seed=2)
LAYER = "conv_seqs.0.conv"
CHUNK = 64  # frames: 16 steps of 4 envs
FIELDS = ("frames", "actions", "rewards", "dones", "episode_ids", "level_seeds", "objects", LAYER)


def features_policy(key, obs):
    """Random actions plus a fake activation computed from the obs, so activations can be checked."""
    actions = jax.random.randint(key, (obs.shape[0],), 0, 15)
    features = obs.reshape(obs.shape[0], 2, -1)[:, :, :3].astype(np.float32)
    return actions, {LAYER: features, "not.recorded": features}


def _collect(path, frames, policy=features_policy, **overrides):
    settings = {"frames": frames, "policy": policy, "env_config": CONFIG, "seed": 7, "chunk_frames": CHUNK}
    settings |= {"layers": [LAYER], "progress": False, "policy_name": "features"}
    return collect(path, **(settings | overrides))


def _assert_same(a: Dataset, b: Dataset):
    assert len(a) == len(b)
    for x, y in zip(a.iter_chunks(100), b.iter_chunks(100), strict=True):
        for key in FIELDS:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """256 frames in one uninterrupted run: the reference the resumed runs must reproduce."""
    return _collect(tmp_path_factory.mktemp("straight") / "ds", 256)


def test_rows_hold_what_the_policy_saw_and_did(straight, tmp_path):
    seen = []

    def recording(key, obs):
        seen.append(obs.copy())
        return features_policy(key, obs)

    ds = _collect(tmp_path / "ds", 256, policy=recording)
    _assert_same(ds, straight)  # same seed, same data
    n = CONFIG.num_envs
    assert len(ds) == 256 and [len(c["index"]) for c in ds.iter_chunks()] == [CHUNK] * 4
    np.testing.assert_array_equal(ds.column("frames"), np.concatenate(seen))  # step-major rows
    np.testing.assert_array_equal(ds[np.arange(n)]["episode_ids"], np.arange(n))
    actions = ds.column("actions").reshape(-1, n)
    key = jax.random.key(7)
    for t in (0, 1, 37):
        np.testing.assert_array_equal(actions[t], features_policy(jax.random.fold_in(key, t), seen[t])[0])
    np.testing.assert_array_equal(ds.column(LAYER), features_policy(key, ds.column("frames"))[1][LAYER])

    objects = ds.column("objects").reshape(
        len(ds), -1
    )  # the object map of each row's frame: the agent is in it
    assert (objects == OBJECT_CLASSES.index("agent")).any(1).all()

    other = _collect(tmp_path / "other", 256, seed=8)
    assert not np.array_equal(other.column("actions"), ds.column("actions"))


def test_resume_matches_a_straight_run(straight, tmp_path):
    first = _collect(tmp_path / "ds", 128)
    assert len(first) == 128
    resumed = _collect(tmp_path / "ds", 256)
    _assert_same(resumed, straight)
    assert [len(c["index"]) for c in resumed.iter_chunks()] == [CHUNK] * 4
    assert len(_collect(tmp_path / "ds", 100)) == 256  # already long enough: unchanged


def test_keyboard_interrupt_saves_the_partial_chunk_and_resume_continues(straight, tmp_path):
    calls = []

    def interrupted_after_21_steps(key, obs):
        if len(calls) == 21:
            raise KeyboardInterrupt
        calls.append(1)
        return features_policy(key, obs)

    with pytest.raises(KeyboardInterrupt):
        _collect(tmp_path / "ds", 256, policy=interrupted_after_21_steps)
    partial = Dataset(tmp_path / "ds")
    assert len(partial) == 21 * CONFIG.num_envs  # one full chunk of 16 steps, then 5 more
    assert [len(c["index"]) for c in partial.iter_chunks()] == [64, 20]
    _assert_same(_collect(tmp_path / "ds", 256), straight)


def test_ctrl_c_stops_after_the_current_step(straight, tmp_path):
    calls = []

    def ctrl_c_on_step_10(key, obs):
        calls.append(1)
        if len(calls) == 10:
            os.kill(os.getpid(), signal.SIGINT)
        return features_policy(key, obs)

    with pytest.raises(KeyboardInterrupt):
        _collect(tmp_path / "ds", 256, policy=ctrl_c_on_step_10)
    assert len(Dataset(tmp_path / "ds")) == 10 * CONFIG.num_envs
    _assert_same(_collect(tmp_path / "ds", 256), straight)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"seed": 8}, "seed=7"),
        ({"env_config": HeistConfig(num_envs=4, seed=3)}, "env_config="),
        ({"layers": []}, "layers="),
        ({"policy_name": "another"}, "policy='features'"),
    ],
)
def test_resume_with_different_settings_is_an_error(tmp_path, override, message):
    _collect(tmp_path / "ds", 16)
    with pytest.raises(JaxinterpError, match=message):
        _collect(tmp_path / "ds", 32, **override)
    assert len(Dataset(tmp_path / "ds")) == 16


def test_bad_arguments(tmp_path):
    with pytest.raises(JaxinterpError, match="frames"):
        _collect(tmp_path / "a", -1)
    with pytest.raises(JaxinterpError, match="no activations for layers"):
        _collect(tmp_path / "b", 16, layers=["missing"])
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "data.bin").write_bytes(b"")
    with pytest.raises(JaxinterpError, match="not a rollout dataset"):
        _collect(tmp_path / "c", 16)


def test_random_policy_episode_summary(tmp_path):
    # Heist times out after 1000 steps, so 1001 steps complete at least one episode per env.
    config = HeistConfig(num_envs=1, seed=0)
    ds = collect(
        tmp_path / "ds", frames=1001, policy=random_policy(), env_config=config, seed=0, progress=False
    )
    assert ds.policy == "random_policy(num_actions=15)" and set(np.unique(ds.column("actions"))) <= set(
        range(15)
    )
    episodes = ds.episodes()
    done = episodes.complete
    assert done.sum() >= 1 and np.all(episodes.length[done] <= 1000)
    assert set(episodes.episode_return.tolist()) <= {0.0, SUCCESS_REWARD}
    np.testing.assert_array_equal(episodes.success, episodes.episode_return == SUCCESS_REWARD)
    summary = ds.summary()
    assert summary.num_episodes == done.sum()
    assert summary.mean_return == pytest.approx(SUCCESS_REWARD * summary.success_rate)
