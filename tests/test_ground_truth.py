"""Object maps read from procgen's game state, and the object-response measure built on them."""

import numpy as np
import pytest

from jaxinterp.envs.ground_truth import OBJECT_CLASSES, Entity, HeistLayout, object_map, parse_state
from jaxinterp.envs.heist import HeistConfig, HeistEnv
from jaxinterp.envs.rollout import collect, random_policy
from jaxinterp.errors import JaxinterpError
from jaxinterp.examples.features import compute_feature_maps
from jaxinterp.examples.find import find_examples
from jaxinterp.examples.object_response import load_npz, object_response, objects_at, save_npz
from jaxinterp.models.agent import Agent
from jaxinterp.report.example_sheets import examples_sheet
from jaxinterp.report.object_tables import OBJECT_COLOURS, colorize_objects, object_maps_sheet

LABEL = {c: i for i, c in enumerate(OBJECT_CLASSES)}
SPACE, WALL = 100, 51


@pytest.fixture(scope="module")
def played():
    """Frames and object maps of 8 Heist games after 40 random steps each, sampled every 4 steps (80 frames)."""
    env = HeistEnv(HeistConfig(num_envs=8, seed=5))
    rng = np.random.default_rng(0)
    frames, maps = [], []
    for t in range(40):
        obs, *_ = env.step(rng.integers(0, 15, 8))
        if t % 4 == 0:
            frames.append(obs)
            maps.append(env.object_maps())
    env.close()
    return np.concatenate(frames), np.concatenate(maps)


def test_painting_follows_procgens_screen_geometry():
    """Easy Heist's 9x9 world fills the 64-pixel view (7.1 px per cell), world y grows upwards, entities are
    painted over the grid by render_z, and a held key shows on the key ring only once it is held."""
    grid = np.full((9, 9), SPACE, np.int32)
    grid[8, 0] = WALL  # world row 8 is the top of the screen
    gem = Entity(9, 0, 4.5, 4.5, 0.5, 0.5, 0, False, False)
    agent = Entity(0, 0, 4.5, 4.5, 0.25, 0.25, 1, False, False)
    ring_key = Entity(11, 1, 0.9, 0.0225, 0.03, 0.02, 1, True, True)
    layout = HeistLayout(grid, (agent, gem, ring_key), (False, False), 9.0, (4.5, 4.5))
    labels = object_map(layout)
    assert labels.shape == (64, 64) and labels.dtype == np.uint8
    assert (labels[:7, :7] == LABEL["wall"]).all() and labels[8:, 8:].max() != LABEL["wall"]
    gem_rows, gem_cols = np.nonzero(np.isin(labels, [LABEL["gem"], LABEL["agent"]]))
    assert (gem_rows.min(), gem_rows.max(), gem_cols.min(), gem_cols.max()) == (28, 35, 28, 35)
    # The agent (render_z 1) is painted over the gem though it comes first.
    assert (labels[30:34, 30:34] == LABEL["agent"]).all() and labels[28, 28] == LABEL["gem"]
    assert not (labels == LABEL["held_key_green"]).any()
    held = object_map(layout._replace(has_keys=(False, True)))
    rows, cols = np.nonzero(held == LABEL["held_key_green"])
    assert rows.max() < 8 and cols.min() > 52  # the ring sits at the top right


def test_object_maps_agree_with_the_frames_colours(played):
    """Every frame shows the agent and the gem, and each class's pixels have its sprite's colour: yellow gem,
    blue/green/red locks. A wrong offset or a flipped axis would put the labels on floor and walls instead."""
    frames, maps = played
    per_frame = maps.reshape(len(maps), -1)
    assert (per_frame == LABEL["agent"]).any(1).all() and (per_frame == LABEL["gem"]).any(1).all()
    rgb = {
        c: frames[maps == LABEL[c]].astype(float).mean(0) for c in OBJECT_CLASSES if (maps == LABEL[c]).any()
    }
    r, g, b = rgb["gem"]
    assert min(r, g) > b + 80
    for colour, channel in (("blue", 2), ("green", 1), ("red", 0)):
        lock = rgb.get(f"lock_{colour}")
        if lock is not None:
            assert np.argmax(lock) == channel, (colour, lock)
    assert {"lock_blue", "lock_green"} <= set(rgb)  # the seeded levels hold locks to check


def test_parse_state_reads_what_procgen_wrote():
    env = HeistEnv(HeistConfig(num_envs=2, seed=1))
    state = env.get_state().procgen[0]
    layout = parse_state(state)
    env.close()
    assert layout.grid.shape == (9, 9) and layout.visibility == 9.0
    assert [e.type for e in layout.entities].count(0) == 1  # one agent
    assert not any(layout.has_keys)
    with pytest.raises(JaxinterpError, match="not a serialized procgen Heist game"):
        parse_state(b"\x00" * 8 + state[8:])
    with pytest.raises(JaxinterpError, match="ended early"):
        parse_state(state[:200])


def _reference(agent, layer, frames, maps):
    """The position-matched z-score and plain mean, computed directly over the full arrays."""
    acts = compute_feature_maps(agent, layer, frames)  # (N, h, w, F)
    n, h, w, _ = acts.shape
    onehot = np.eye(len(OBJECT_CLASSES))[maps]
    cov = onehot.reshape(n, h, 64 // h, w, 64 // w, -1).mean((2, 4))  # (N, h, w, K)
    mu, sd = acts.mean(0), acts.std(0)
    zmap = (acts - mu) / np.where(sd > 0, sd, np.inf)
    with np.errstate(invalid="ignore"):
        z = np.einsum("nhwf,nhwk->fk", zmap, cov) / cov.sum((0, 1, 2))
        mean = np.einsum("nhwf,nhwk->fk", acts, cov) / cov.sum((0, 1, 2))
    return z, mean


def test_object_response_matches_a_direct_computation(played, tmp_path):
    frames, maps = played
    agent = Agent.random("impala", seed=3)
    layer = "conv_seqs.1.res_block1"
    result = object_response(agent, layer, (frames, maps), batch_size=24)  # 80 frames: a padded last batch
    z, mean = _reference(agent, layer, frames, maps)
    seen = result.pixels > 0
    assert result.z.shape == (32, len(OBJECT_CLASSES)) and result.num_frames == 80
    np.testing.assert_allclose(result.z[:, seen], z[:, seen], atol=2e-3)
    np.testing.assert_allclose(result.mean[:, seen], mean[:, seen], rtol=1e-3, atol=1e-4)
    assert np.isnan(result.z[:, ~seen]).all()
    assert result.pixels.sum() == 80 * 64 * 64
    save_npz(result, tmp_path / "o.npz")
    back = load_npz(tmp_path / "o.npz")
    np.testing.assert_array_equal(back.z, result.z)
    assert back.classes == result.classes and back.layer == layer


def test_a_planted_blue_detector_responds_to_the_blue_objects(played):
    """Channel 0 of the first convolution made a blue detector (B - R at the centre tap, threshold 0.2, seen after
    the pool's relu): the measure must rank the blue key, lock and held key above every other object."""
    frames, maps = played
    agent = Agent.random("impala", seed=0)
    kernel = np.array(agent.params["conv_seqs.0.conv"]["kernel"])
    kernel[..., 0] = 0
    kernel[1, 1, :, 0] = (-1.0, 0.0, 1.0)
    bias = np.zeros_like(agent.params["conv_seqs.0.conv"]["bias"])
    bias[0] = -0.2
    params = {**agent.params, "conv_seqs.0.conv": {"kernel": kernel, "bias": bias}}
    result = object_response(
        agent, "conv_seqs.0.max_pool2d.relu", (frames, maps), params=params, batch_size=40
    )
    z = dict(zip(result.classes, result.z[0]))
    blue = {c: z.pop(c) for c in ("key_blue", "lock_blue", "held_key_blue")}
    assert min(blue.values()) > 1.5 and np.nanmax(list(z.values())) < 1.0, (blue, z)
    assert result.best()[0][1] in blue


def test_object_response_rejects_bad_input(played):
    frames, maps = played
    agent = Agent.random("impala", seed=0)
    with pytest.raises(JaxinterpError, match="must be \\(N, 64, 64, 3\\) and \\(N, 64, 64\\)"):
        object_response(agent, "conv_seqs.0", (frames, maps[:3]))
    with pytest.raises(JaxinterpError, match="unknown layer"):
        object_response(agent, "conv9", (frames, maps))


def test_objects_at_names_the_object_in_each_positions_block():
    floor, wall, agent, gem = (LABEL[c] for c in ("floor", "wall", "agent", "gem"))
    maps = np.full((2, 64, 64), floor, np.uint8)
    maps[0, :8, :] = wall  # block row 0 is wall
    maps[0, 8:16, 8:16] = gem
    maps[1, 20:22, 20:25] = agent  # 10 agent pixels among 54 of floor still name the agent
    frames = np.array([[0, 0, 1, -1]])
    ys, xs = np.array([[0, 1, 2, 0]]), np.array([[0, 1, 2, 0]])
    np.testing.assert_array_equal(objects_at(maps, frames, ys, xs, 8), [[wall, gem, agent, -1]])
    np.testing.assert_array_equal(
        objects_at({7: maps[0]}, [7], [0], [0], 64), [gem]
    )  # a dense layer's 1x1 map


def test_example_sheets_name_the_object_under_each_patch(played):
    frames, maps = played
    agent = Agent.random("impala", seed=0)
    result = find_examples(agent, "conv_seqs.1.res_block1", frames, channels=[0], k=4)
    plain = examples_sheet(result, 0)
    named = examples_sheet(result, 0, object_maps=maps)
    assert named.shape[0] > plain.shape[0] and named.shape[1] == plain.shape[1]  # a second caption line
    all_floor = examples_sheet(result, 0, object_maps=np.full_like(maps, LABEL["floor"]))
    all_wall = examples_sheet(result, 0, object_maps=np.full_like(maps, LABEL["wall"]))
    assert all_floor.shape == all_wall.shape and not np.array_equal(all_floor, all_wall)  # the names differ


def test_dense_layer_sheets_name_no_object(played):
    """A dense feature's one position is the whole frame: naming its largest object would say nothing."""
    frames, maps = played
    result = find_examples(Agent.random("impala", seed=0), "hidden_fc", frames, channels=[0], k=2)
    np.testing.assert_array_equal(examples_sheet(result, 0, object_maps=maps), examples_sheet(result, 0))


def test_objects_at_reads_a_dataset(tmp_path):
    ds = collect(
        tmp_path / "ds",
        frames=64,
        policy=random_policy(),
        env_config=HeistConfig(num_envs=4, seed=2),
        seed=0,
        progress=False,
    )
    rng = np.random.default_rng(0)
    frames, ys, xs = rng.integers(0, 64, (3, 5)), rng.integers(0, 8, (3, 5)), rng.integers(0, 8, (3, 5))
    frames[0, 0] = -1
    np.testing.assert_array_equal(
        objects_at(ds, frames, ys, xs, 8), objects_at(ds.column("objects"), frames, ys, xs, 8)
    )


def test_object_maps_sheet_draws_each_class_in_its_colour(played):
    frames, maps = played
    pictures = colorize_objects(maps[:2])
    agent = maps[:2] == LABEL["agent"]
    assert pictures.shape == (2, 64, 64, 3) and (pictures[agent] == OBJECT_COLOURS[LABEL["agent"]]).all()
    sheet = object_maps_sheet(frames[:2], maps[:2], scale=1)
    assert sheet.ndim == 3 and sheet.shape[1] >= 2 * 64
