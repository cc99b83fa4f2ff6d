"""Interventions: the edit forms, the edit arithmetic against hand-computed and torch-hook references, batched play
that gives every edit the same levels and replays the clean agent exactly under an empty edit, and the statistics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import needs_torch

import jaxinterp
from jaxinterp.envs.heist import HeistConfig
from jaxinterp.errors import JaxinterpError
from jaxinterp.interventions import (
    Edit,
    apply_slot,
    compare,
    compile_edits,
    describe,
    make_levels,
    mcnemar_p,
    parse_edits,
    play,
    run_sweep,
)

LAYER = "conv_seqs.1.res_block1"


@pytest.fixture(scope="module")
def agent():
    return jaxinterp.Agent.random("impala", seed=3)


def test_edit_strings_read_and_write_back():
    text = f"{LAYER}:7=0; {LAYER}:1,3=mean; {LAYER}:0-2+=1.5@3,4; {LAYER}:5*=2; {LAYER}:all=resample; {LAYER}:4=frame:9"
    edits = parse_edits(text)
    assert [e.op for e in edits] == ["zero", "mean", "add", "scale", "resample", "patch"]
    assert edits[2].at == (3, 4) and edits[2].value == 1.5 and edits[5].frame == 9
    assert parse_edits(describe(edits)) == edits
    assert parse_edits("clean") == () and describe(()) == "clean"
    assert parse_edits("sae:12=0", sae_layer=LAYER) == (Edit(LAYER, "12", "zero", target="sae"),)


@pytest.mark.parametrize(
    "text, message",
    [
        (f"{LAYER}:7=lots", "as a number"),
        (f"{LAYER}7=0", "cannot read the edit"),
        ("sae:3=0", "give the SAE"),
        (f"{LAYER}:7=", "cannot read the edit"),
    ],
)
def test_edit_strings_that_do_not_parse_say_so_in_one_line(text, message):
    with pytest.raises(JaxinterpError, match=message) as err:
        parse_edits(text)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "text, message",
    [
        ("conv_seqs.9.nope:1=0", "unknown layer"),
        (f"{LAYER}:32=0", "out of range"),
        (f"{LAYER}:1=2@16,0", "outside layer"),
        (f"{LAYER}:1=mean", "need dataset frames"),
    ],
)
def test_bad_layers_channels_and_positions_are_one_line_errors(agent, text, message):
    with pytest.raises(JaxinterpError, match=message) as err:
        compile_edits(agent, [parse_edits(text)])
    assert "\n" not in str(err.value)


def _acts(agent, frames):
    return agent.activations(frames, [LAYER])[LAYER]


def _edit(agent, text, acts, frames=None, key=0):
    ((slot, arrays),) = compile_edits(agent, [parse_edits(text)], frames=frames).items()
    return np.asarray(apply_slot(slot, arrays, jnp.zeros(len(acts), jnp.int32), acts, jax.random.key(key)))


def test_each_edit_changes_exactly_what_it_names(agent, heist_frames):
    frames = heist_frames[:6]
    acts = np.asarray(_acts(agent, frames))
    zero = _edit(agent, f"{LAYER}:7=0", acts)
    assert (zero[..., 7] == 0).all()
    np.testing.assert_array_equal(np.delete(zero, 7, -1), np.delete(acts, 7, -1))
    added = _edit(agent, f"{LAYER}:2+=3@5,1", acts)  # column 5, row 1
    expected = acts.copy()
    expected[:, 1, 5, 2] += 3
    np.testing.assert_allclose(added, expected, rtol=0, atol=1e-6)
    scaled = _edit(agent, f"{LAYER}:0-1*=2", acts)
    np.testing.assert_allclose(scaled[..., :2], 2 * acts[..., :2], rtol=1e-6)
    mean = _edit(agent, f"{LAYER}:4=mean", acts, frames=heist_frames)
    np.testing.assert_allclose(
        mean[..., 4],
        np.broadcast_to(_acts(agent, heist_frames)[..., 4].mean(0), acts.shape[:3]),
        rtol=1e-5,
        atol=1e-6,
    )
    patched = _edit(agent, f"{LAYER}:all=frame:3", acts, frames=heist_frames)
    np.testing.assert_allclose(
        patched, np.broadcast_to(_acts(agent, heist_frames)[3], acts.shape), rtol=1e-5, atol=1e-6
    )


def test_a_resample_ablation_draws_from_the_dataset_not_the_current_frame(agent, heist_frames):
    bank_frames, current = (
        heist_frames[:16],
        heist_frames[:4, :, ::-1],
    )  # mirrored: frames the bank does not hold
    bank = np.asarray(_acts(agent, bank_frames))[..., 3]
    acts = np.asarray(_acts(agent, current))
    for key in range(3):
        out = _edit(agent, f"{LAYER}:3=resample", acts, frames=bank_frames, key=key)[..., 3]
        # every edited map is one of the bank's frames whole, and none is the frame's own map
        matches = [np.flatnonzero(np.abs(bank - m).max((1, 2)) < 1e-5) for m in out]
        assert all(len(m) == 1 for m in matches)
        assert not np.isclose(out, acts[..., 3], atol=1e-5).all((1, 2)).any()


def test_an_empty_edit_and_the_clean_row_share_one_program_and_change_nothing(agent, heist_frames):
    acts = _acts(agent, heist_frames[:4])
    arrays = compile_edits(agent, [(), parse_edits(f"{LAYER}:1=0")])
    ((slot, arr),) = arrays.items()
    out = apply_slot(slot, arr, jnp.zeros(4, jnp.int32), acts, jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(out), np.asarray(acts))  # bit for bit


@needs_torch
def test_zero_ablating_a_channel_equals_a_torch_forward_hook(heist_frames):
    import torch
    from torch_models import random_model

    model = random_model("impala", seed=2, num_actions=15)
    agent = jaxinterp.agent_from_state_dict({k: v.numpy() for k, v in model.state_dict().items()})
    ((slot, arrays),) = compile_edits(agent, [parse_edits(f"{LAYER}:5=0")]).items()
    frames = heist_frames[:8]
    edit = lambda acts: apply_slot(slot, arrays, jnp.zeros(len(frames), jnp.int32), acts, jax.random.key(0))
    ours = agent.forward(agent.params, jnp.asarray(frames, jnp.float32) / 255, {LAYER: edit})[
        agent.arch.logits
    ]

    def hook(_m, _i, out):
        out = out.clone()
        out[:, 5] = 0
        return out

    handle = model.get_submodule(LAYER).register_forward_hook(hook)
    with torch.no_grad():
        theirs, _ = model(torch.as_tensor(frames))
    handle.remove()
    np.testing.assert_allclose(np.asarray(ours), theirs.numpy(), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        assert (
            np.abs(model(torch.as_tensor(frames))[0].numpy() - theirs.numpy()).max() > 1e-3
        )  # it did matter


@pytest.fixture(scope="module")
def played(agent):
    levels = make_levels(HeistConfig(num_envs=3, num_levels=0, start_level=0, seed=5))
    rows = [(), (), parse_edits(f"{LAYER}:all=0")]
    which = np.repeat(np.arange(3), 3)
    level_of = np.tile(np.arange(3), 3)
    result = play(
        agent, levels, compile_edits(agent, rows), which, level_of, seed=1, max_steps=25, progress_bar=False
    )
    return levels, which, level_of, result


def test_an_empty_edit_replays_the_clean_agent_exactly(played):
    _, which, _, result = played
    np.testing.assert_array_equal(result.actions[which == 0], result.actions[which == 1])
    np.testing.assert_array_equal(result.path[which == 0], result.path[which == 1])
    assert (np.nan_to_num(result.kl[which == 1]) == 0).all()
    assert np.nanmean(result.kl[which == 2]) > 0  # ablating the whole layer moves the (near-uniform) policy


def test_the_edited_policy_acts_on_any_subset_of_the_environments_as_on_all(agent, heist_frames):
    from jaxinterp.interventions.play import edited_policy

    rows = [(), parse_edits(f"{LAYER}:all=0"), parse_edits(f"{LAYER}:3+=2@1,1")]
    which, level_of = np.array([0, 1, 2, 0, 1, 2]), np.array([0, 0, 0, 1, 1, 1])
    policy = edited_policy(agent, compile_edits(agent, rows), which, level_of, seed=4)
    obs = heist_frames[:6]
    actions, kl = policy(obs, np.arange(6), 7)
    envs = np.array([1, 3, 5])  # episodes of the others have ended
    sub_actions, sub_kl = policy(obs[envs], envs, 7)
    np.testing.assert_array_equal(sub_actions, actions[envs])
    np.testing.assert_allclose(sub_kl, kl[envs], rtol=1e-5, atol=1e-7)


def test_frames_shared_by_environments_pass_the_network_once_and_act_as_alone(agent, heist_frames):
    from jaxinterp.interventions.play import edited_policy, unique_rows
    from jaxinterp.models.agent import preprocess

    obs = heist_frames[[0, 0, 0, 1, 1, 2]]
    first, inverse, hashes = unique_rows(obs)
    assert len(first) == 3 and (obs[first][inverse] == obs).all() and len(set(hashes)) == 3
    rows = [(), parse_edits(f"{LAYER}:all=0"), parse_edits(f"{LAYER}:3+=2@1,1")]
    which, level_of = np.array([0, 1, 2, 0, 2, 2]), np.array([0, 0, 0, 1, 1, 2])
    policy = edited_policy(agent, compile_edits(agent, rows), which, level_of, seed=4)
    actions, kl = policy(obs, np.arange(6), 7)
    for i in range(6):
        alone_actions, alone_kl = policy(obs[i : i + 1], np.array([i]), 7)
        assert alone_actions[0] == actions[i]
        np.testing.assert_allclose(alone_kl[0], kl[i], rtol=1e-5, atol=1e-7)
    # The network split at the edited layer is the whole network with the edit inside it.
    images = preprocess(jnp.asarray(obs[:2]))
    clean = jax.nn.log_softmax(agent.forward(agent.params, images)[agent.arch.logits])
    zeroed = jax.nn.log_softmax(
        agent.forward(agent.params, images, {LAYER: jnp.zeros_like})[agent.arch.logits]
    )
    np.testing.assert_allclose(kl[1], np.sum(np.exp(clean) * (clean - zeroed), -1)[1], rtol=1e-4)


def test_environments_labelled_alike_see_the_same_frame(agent):
    """`play_levels` labels environments in one game state (same level, same moves): their frames are equal, and
    `unique_rows` reading one row per label finds what reading every row finds."""
    from jaxinterp.interventions.play import edited_policy, play_levels, unique_rows

    levels = make_levels(HeistConfig(num_envs=2, num_levels=0, start_level=0, seed=5))
    rows = [(), parse_edits(f"{LAYER}:3=0"), parse_edits(f"{LAYER}:all+=50")]  # alike, then far apart
    which, level_of = np.repeat(np.arange(3), 2), np.tile(np.arange(2), 3)
    inner = edited_policy(agent, compile_edits(agent, rows), which, level_of, seed=1)
    shared = []

    def checked(obs, envs, t, same):
        for label in np.unique(same):
            group = obs[same == label]
            assert (group == group[0]).all(), f"step {t}: environments labelled alike see different frames"
            shared.append(len(group) > 1)
        first, inverse, hashes = unique_rows(obs, same)
        plain = unique_rows(obs)
        assert (obs[first][inverse] == obs).all() and sorted(hashes) == sorted(plain[2])
        return inner(obs, envs, t, same)

    play_levels(checked, levels, level_of, max_steps=30, progress_bar=False)
    assert any(shared) and not all(shared)  # groups formed, and some edits changed the course


def test_frames_seen_on_earlier_steps_act_as_new_ones(agent, heist_frames):
    """The activations kept from earlier steps give what the network gives (with a cache too small to keep
    anything, every frame passes the network); the cache stays within its memory, the least recently used
    dropped first."""
    from jaxinterp.interventions.play import Recent, edited_policy

    rows = [(), parse_edits(f"{LAYER}:all=0")]
    which, level_of = np.array([0, 1, 0, 1]), np.array([0, 0, 1, 1])
    steps = [heist_frames[[0, 0, 1, 1]], heist_frames[[2, 0, 3, 1]], heist_frames[[0, 2, 1, 3]]]
    edits = compile_edits(agent, rows)
    kept = edited_policy(agent, edits, which, level_of, seed=4)
    fresh = edited_policy(agent, edits, which, level_of, seed=4, cache_bytes=0)
    for t, obs in enumerate(steps):
        (a, kl), (b, kl_fresh) = kept(obs, np.arange(4), t), fresh(obs, np.arange(4), t)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(kl, kl_fresh, rtol=1e-5, atol=1e-7)
    # frames 0 and 1 were seen before on the second step, all four on the third
    assert kept.recent.hits == 2 + 4 and fresh.recent.hits == 0
    frame, act = np.zeros(10, np.uint8), np.ones(5, np.float32)  # 30 bytes an entry
    recent = Recent(max_bytes=100)  # room for three
    for key in range(3):
        recent.put(key, frame + key, act * key)
    assert recent.bytes == 90 and recent.get(0, frame) is not None  # 0 is now the most recently used
    recent.put(3, frame + 3, act)
    assert recent.bytes == 90 and recent.get(1, frame + 1) is None and recent.get(0, frame) is not None
    assert recent.get(3, frame) is None  # a hash that matches another frame is a miss
    assert recent.hits == 2


def test_a_level_played_alone_goes_as_among_copies_of_itself(agent, played):
    levels, which, level_of, result = played
    one = np.zeros(1, np.int32)
    alone = play(
        agent, levels, compile_edits(agent, [()]), one, one, seed=1, max_steps=25, progress_bar=False
    )
    i = np.flatnonzero((which == 0) & (level_of == 0))[0]
    np.testing.assert_array_equal(alone.actions[0], result.actions[i])
    np.testing.assert_array_equal(alone.path[0], result.path[i])
    np.testing.assert_array_equal(alone.reached[0], result.reached[i])


def test_the_special_actions_leave_the_game_as_standing_still_does():
    """Batched play reads one game per group of environments with the same moves: this is what makes it exact."""
    from jaxinterp.envs.heist import MOVE_OF_ACTION
    from jaxinterp.interventions.play import _start

    levels = make_levels(HeistConfig(num_envs=1, seed=3))
    still = [a for a, m in enumerate(MOVE_OF_ACTION) if m == 4]
    env, _ = _start(levels, np.zeros(len(still), np.int32))
    for move in (7, 4, 5, 4, 0, 4, 4, 8):
        actions = np.array(still if move == 4 else [move] * len(still), np.int32)
        env.step(actions)
        if move != 4:  # the next step overwrote what the special action left
            assert len(set(env.game_states(range(len(still))))) == 1
    env.close()


def test_every_edit_sees_the_same_levels(played):
    levels, _, level_of, result = played
    assert len(set(levels.seeds.tolist())) == 3
    for lv in range(3):
        firsts = result.first_frames[level_of == lv]
        assert (firsts == firsts[0]).all()
    assert not (result.first_frames[0] == result.first_frames[1]).all()
    assert (
        np.isfinite(result.path[:, 0]).all()
        and (result.path[:, 0] >= 0).all()
        and (result.path[:, 0] < 64).all()
    )


def test_mcnemar_and_paired_comparison_by_hand():
    before = np.array([1, 1, 1, 1, 0, 0, 0, 0, 1, 1], bool)
    after = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1, 1], bool)
    # 4 lost, 1 gained: p = 2 * (C(5,0) + C(5,1)) / 32 = 0.375
    assert mcnemar_p(before, after) == pytest.approx(0.375)
    assert mcnemar_p(before, before) == 1.0


def test_compare_pairs_edits_with_clean_by_level(played):
    _, which, level_of, result = played
    rows = compare(result, which, level_of, ["clean", "clean again", "all zero"])
    assert rows[1]["success_change"] == 0 and rows[1]["first_changed"] == 0 and rows[1]["kl"] == 0
    assert rows[2]["kl"] > 0 and rows[0]["success_p"] == 1.0
    lo, hi = rows[2]["length_ci"]
    assert lo <= rows[2]["length_change"] <= hi


@pytest.mark.slow
def test_a_sweep_plays_every_edit_on_every_level_and_draws_it(agent, tmp_path):
    from PIL import Image

    from jaxinterp.report.intervention_figures import EDIT_COLOUR, write_sweep

    sweep = run_sweep(
        agent, [f"{LAYER}:0=0", f"{LAYER}:all=0"], num_levels=2, max_steps=12, keep_frames=1, progress=False
    )
    assert sweep.names == ["clean", f"{LAYER}:0=0", f"{LAYER}:all=0"]
    assert len(sweep.which) == 6 and [r["levels"] for r in sweep.rows] == [2, 2, 2]
    assert sweep.play.frames.shape == (3, 13, 64, 64, 3)
    write_sweep(tmp_path, sweep)
    assert {p.name for p in tmp_path.iterdir()} >= {
        "results.json",
        "table.md",
        "effects.png",
        "episode_2.gif",
    }
    sheet = np.asarray(Image.open(tmp_path / "trajectories_2.png").convert("RGB"))
    assert (sheet == EDIT_COLOUR).all(-1).sum() > 20  # the edited path is drawn
    gif = Image.open(tmp_path / "episode_2.gif")
    assert 1 < gif.n_frames <= 13 and gif.size == (2 * 64 * 3 + 6, 64 * 3)  # Pillow merges repeated frames


@pytest.mark.slow
def test_environments_left_playing_continue_in_a_smaller_env_and_play_the_same(monkeypatch):
    """Episodes of the shipped agent end at different steps: dropping the finished environments from procgen
    (`HeistEnv.keep_only`) changes nothing that is played or recorded, kept frames included."""
    from jaxinterp.envs.heist import HeistEnv
    from jaxinterp.weights.store import default_checkpoint

    shipped = jaxinterp.load_agent(default_checkpoint())
    # levels where the shipped agent's episodes end at different steps, some before the 400-step cap (checked below)
    levels = make_levels(HeistConfig(num_envs=4, num_levels=0, start_level=0, seed=7))
    rows = [(), parse_edits("conv_seqs.2.res_block1:5=0")]
    which, level_of = np.repeat(np.arange(2), 4), np.tile(np.arange(4), 2)
    shrinks = []
    keep_only = HeistEnv.keep_only
    monkeypatch.setattr(
        HeistEnv, "keep_only", lambda self, envs: shrinks.append(len(envs)) or keep_only(self, envs)
    )
    edits = compile_edits(shipped, rows)
    options = {"seed": 2, "max_steps": 400, "keep_frames": [0, 5], "progress_bar": False}
    small = play(shipped, levels, edits, which, level_of, **options)
    whole = play(shipped, levels, edits, which, level_of, shrink=False, **options)
    assert shrinks and shrinks[0] <= 4, shrinks  # the env shrank while some played on
    assert len(np.unique(small.length)) > 2
    for field in small._fields:
        np.testing.assert_array_equal(getattr(small, field), getattr(whole, field), err_msg=field)
