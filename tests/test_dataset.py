"""The on-disk dataset: round trip through DatasetWriter, memory-mapped reads, atomicity leftovers, errors."""

import json

import numpy as np
import pytest

from jaxinterp.envs.dataset import Dataset, DatasetWriter, activation_file_stem
from jaxinterp.envs.heist import HeistConfig, HeistState
from jaxinterp.errors import JaxinterpError

N = 2  # envs
LAYER = "conv_seqs.2.res_block1"


def _state(steps):
    zeros = np.zeros(N, np.int64)
    return HeistState((b"a", b"bc"), steps, 9, zeros, zeros, zeros, np.zeros(N, np.float32), zeros)


def _rows(start_step, steps, rng):
    """Synthetic rows for `steps` steps: env 0 plays episodes 0 then 2, env 1 plays episode 1."""
    t = np.repeat(np.arange(start_step, start_step + steps), N)
    env = np.tile(np.arange(N), steps)
    episode = np.where((env == 0) & (t >= 3), 2, env)
    done = (env == 0) & (t == 2)
    return {
        "frames": rng.integers(0, 256, (len(t), 64, 64, 3), dtype=np.uint8),
        "actions": rng.integers(0, 15, len(t)).astype(np.int32),
        "rewards": np.where(done, 10.0, 0.0).astype(np.float32),
        "dones": done,
        "episode_ids": episode.astype(np.int64),
        "level_seeds": 100 + episode.astype(np.int64),
        "objects": rng.integers(0, 13, (len(t), 64, 64), dtype=np.uint8),
        LAYER: rng.normal(size=(len(t), 3, 3, 4)).astype(np.float32),
    }


@pytest.fixture
def written(tmp_path):
    """A dataset of two chunks (3 and 2 steps) and the rows it should hold."""
    rng = np.random.default_rng(0)
    writer = DatasetWriter.create(
        tmp_path / "ds", env_config=HeistConfig(num_envs=N), seed=3, policy="p", layers=[LAYER]
    )
    parts = [_rows(0, 3, rng), _rows(3, 2, rng)]
    writer.append(parts[0], _state(3))
    writer.append(parts[1], _state(5))
    rows = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return tmp_path / "ds", rows


def test_round_trip_and_memory_map(written):
    path, rows = written
    ds = Dataset(path)
    assert len(ds) == 10 and ds.num_steps == 5 and ds.layers == (LAYER,)
    assert ds.config == HeistConfig(num_envs=N) and ds.seed == 3 and ds.policy == "p"
    assert ds.row_shape(LAYER) == (3, 3, 4)
    meta = json.loads((path / "meta.json").read_text())
    assert meta["layers"] == {LAYER: "act_conv_seqs_2_res_block1"} == {LAYER: activation_file_stem(LAYER)}
    assert [c["length"] for c in meta["chunks"]] == [6, 4]

    frames = np.load(path / "chunk_00001" / "frames.npy", mmap_mode="r")
    assert isinstance(frames, np.memmap) and frames.shape == (4, 64, 64, 3)
    stored = list(ds.iter_chunks())
    assert [len(c["index"]) for c in stored] == [6, 4]
    assert isinstance(stored[0]["frames"], np.memmap)

    for size in (3, 7, 100):
        batches = list(ds.iter_chunks(size))
        assert all(len(b["index"]) == size for b in batches[:-1])
        for key, value in rows.items():
            np.testing.assert_array_equal(np.concatenate([b[key] for b in batches]), value)
    only = next(ds.iter_chunks(4, fields=["actions"]))
    assert set(only) == {"actions", "index"}
    np.testing.assert_array_equal(ds.column("rewards"), rows["rewards"])


def test_indexing_gathers_across_chunks_in_order(written):
    ds = Dataset(written[0])
    rows = written[1]
    index = np.array([9, 0, 5, 6, -1])
    batch = ds[index]
    np.testing.assert_array_equal(batch["index"], [9, 0, 5, 6, 9])
    for key, value in rows.items():
        np.testing.assert_array_equal(batch[key], value[index])
    np.testing.assert_array_equal(ds[4:8]["frames"], rows["frames"][4:8])
    assert ds[7]["frames"].shape == (64, 64, 3) and ds[7]["actions"] == rows["actions"][7]
    with pytest.raises(IndexError):
        ds[np.array([10])]


def test_episodes(written):
    ds = Dataset(written[0])
    episodes = ds.episodes()
    np.testing.assert_array_equal(episodes.episode_id, [0, 1, 2])
    np.testing.assert_array_equal(episodes.env, [0, 1, 0])
    np.testing.assert_array_equal(episodes.first_step, [0, 0, 3])
    np.testing.assert_array_equal(episodes.length, [3, 5, 2])
    np.testing.assert_array_equal(episodes.level_seed, [100, 101, 102])
    np.testing.assert_array_equal(episodes.episode_return, [10, 0, 0])
    np.testing.assert_array_equal(episodes.complete, [True, False, False])
    np.testing.assert_array_equal(episodes.success, [True, False, False])
    np.testing.assert_array_equal(ds.episode_rows(2), [6, 8])
    summary = ds.summary()
    assert (summary.num_episodes, summary.mean_return, summary.success_rate) == (1, 10.0, 1.0)


def test_leftovers_of_an_interrupted_write_are_ignored_then_cleared(written):
    path = written[0]
    # What a crash between the chunk rename and the meta update, or mid-write, leaves behind.
    (path / "chunk_00002").mkdir()
    (path / "chunk_00002" / "frames.npy").write_bytes(b"garbage")
    (path / ".tmp-chunk_00003").mkdir()  # an older version's temporary name
    (path / "chunk_00003.partial").mkdir()
    (path / "meta.json.partial").write_text("{")
    (path / "state_000000000099.npz").write_bytes(b"")
    (path / "notes.txt").write_text("the user's own file")
    assert len(Dataset(path)) == 10

    writer = DatasetWriter.open(path)
    assert writer.resume_state().steps == 5
    assert sorted(p.name for p in path.iterdir()) == [
        "chunk_00000",
        "chunk_00001",
        "meta.json",
        "notes.txt",
        "state_000000000005.npz",
    ]
    writer.append(_rows(5, 1, np.random.default_rng(1)), _state(6))
    assert len(Dataset(path)) == 12 and not (path / "state_000000000005.npz").exists()


def test_not_a_dataset(tmp_path):
    with pytest.raises(JaxinterpError, match="is not a rollout dataset"):
        Dataset(tmp_path)
    (tmp_path / "x").write_text("x")
    with pytest.raises(JaxinterpError, match="not a rollout dataset"):
        DatasetWriter.create(tmp_path, env_config=HeistConfig(), seed=0, policy="p", layers=())


@pytest.mark.parametrize("damage", ["truncate", "delete", "meta"])
def test_corrupt_dataset(written, damage):
    path = written[0]
    target = path / "chunk_00001" / "frames.npy"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:-10])
    elif damage == "delete":
        target.unlink()
    else:
        (path / "meta.json").write_text("{not json")
    with pytest.raises(JaxinterpError, match="is corrupt") as error:
        Dataset(path)
    assert "\n" not in str(error.value)


def test_datasets_of_another_format_version(written):
    path = written[0]
    meta = json.loads((path / "meta.json").read_text())
    for version, message in ((1, "older jaxinterp .* record it again"), (99, "newer jaxinterp")):
        (path / "meta.json").write_text(json.dumps(meta | {"version": version}))
        with pytest.raises(JaxinterpError, match=message):
            Dataset(path)


def test_layer_names_that_collide(tmp_path):
    for layers, message in ((["a.b", "a_b"], "both map"), (["frames"], "clashes")):
        with pytest.raises(JaxinterpError, match=message):
            DatasetWriter.create(
                tmp_path / message, env_config=HeistConfig(), seed=0, policy="p", layers=layers
            )
