"""The command line: info, convert round trips, rollout, evaluate, export, and one-line errors."""

import argparse
import inspect
import json
import shlex

import jax
import numpy as np
import pytest

import jaxinterp
import jaxinterp.cli
import jaxinterp.envs.dataset
import jaxinterp.rl.train
from jaxinterp.cli import main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    agent = jaxinterp.Agent.random("impala", seed=7)
    return jaxinterp.save_agent(agent, tmp_path_factory.mktemp("ckpt") / "agent.pt")


def test_version_is_the_package_metadata(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.split() == ["jaxinterp", jaxinterp.__version__]
    assert jaxinterp.__version__.count(".") == 2


def test_info_lists_layers(checkpoint, capsys):
    assert main(["info", str(checkpoint)]) == 0
    out = capsys.readouterr().out
    assert "architecture: impala" in out and "actions: 15" in out and "626,256" in out
    assert any(
        line.split() == ["conv_seqs.2.res_block1", "8", "x", "8", "x", "32"] for line in out.splitlines()
    )


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ""])
def test_convert_round_trips(checkpoint, tmp_path, suffix, capsys):
    out = tmp_path / f"converted{suffix}"
    assert main(["convert", str(checkpoint), str(out)]) == 0
    a, b = jaxinterp.load_agent(checkpoint), jaxinterp.load_agent(out)
    jax.tree.map(np.testing.assert_array_equal, a.params, b.params)


def test_errors_are_one_line(tmp_path, capsys, checkpoint, monkeypatch):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("jaxinterp: error:") and "\n" not in err and "bad.pt" in err
    monkeypatch.setenv("JAXINTERP_WEIGHTS", str(tmp_path / "nowhere"))
    assert main(["info"]) == 2
    assert "train-agent" in capsys.readouterr().err
    assert (
        main(
            [
                "rollout",
                "--checkpoint",
                str(checkpoint),
                "--frames",
                "8",
                "--out",
                str(tmp_path / "d"),
                "--layers",
                "nope",
            ]
        )
        == 2
    )
    assert "valid layers" in capsys.readouterr().err
    assert main(["convert", str(checkpoint), str(tmp_path / "x.onnx")]) == 2
    assert "unsupported output" in capsys.readouterr().err


def test_rollout_with_agent_activations(checkpoint, tmp_path):
    out = tmp_path / "data"
    args = [
        "rollout",
        "--checkpoint",
        str(checkpoint),
        "--frames",
        "32",
        "--num-envs",
        "4",
        "--out",
        str(out),
        "--layers",
        "conv_seqs.0.conv",
    ]
    assert main(args) == 0
    ds = jaxinterp.envs.dataset.Dataset(out)
    assert len(ds) == 32
    batch = ds[np.arange(4)]
    acts = jaxinterp.load_agent(checkpoint).activations(batch["frames"], ["conv_seqs.0.conv"])
    np.testing.assert_allclose(batch["conv_seqs.0.conv"], acts["conv_seqs.0.conv"], atol=1e-5)


def test_evaluate_reports_agent_and_random(checkpoint, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["evaluate", str(checkpoint), "--episodes", "4", "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert set(results) == {"agent", "random"}
    for r in results.values():
        assert r["episodes"] == 4 and 0 <= r["success_rate"] <= 1
        assert r["mean_return"] == pytest.approx(10 * r["success_rate"])


@pytest.mark.slow
def test_train_then_export_gives_the_same_policy(tmp_path, heist_frames):
    run = tmp_path / "run"
    config = "num_envs=2,num_steps=8,num_minibatches=2,update_epochs=2"  # as test_ppo.TINY: compiled once
    assert main(["train-agent", "--frames", "16", "--out", str(run), "--config", config]) == 0
    assert main(["export-agent", str(run), str(tmp_path / "w" / "tiny"), "--episodes", "2"]) == 0
    card = json.loads((tmp_path / "w" / "tiny.card.json").read_text())
    assert card["frames_trained"] == 16 and card["architecture"] == "impala"
    assert (
        set(card["evaluation"]) >= {"agent", "greedy", "random"} and len(card["color_stats"]["matrix"]) == 3
    )
    # the learning curve beside the PPO baseline's (the run plays its game: easy mode, unbounded levels)
    assert (
        card["learning_curve"]["file"] == "tiny.curve.png" and (tmp_path / "w" / "tiny.curve.png").is_file()
    )
    baseline_row = card["learning_curve"]["baseline_at_frames"]
    assert baseline_row["frames"] == 180_224  # the baseline's first row (after its first 10 updates)
    assert "![learning curve](tiny.curve.png)" in (tmp_path / "w" / "tiny.md").read_text()
    trained = jaxinterp.load_agent(run)  # a run directory stands for its latest policy, in Python too
    for suffix in (".pt", ".safetensors"):
        exported = jaxinterp.load_agent(tmp_path / "w" / f"tiny{suffix}")
        np.testing.assert_allclose(exported(heist_frames)[0], trained(heist_frames)[0], atol=1e-5)
    assert main(["info", str(run)]) == 0  # a run directory stands for its latest policy, in every command
    assert main(["convert", str(run), str(tmp_path / "latest.safetensors")]) == 0
    converted = jaxinterp.load_agent(tmp_path / "latest.safetensors")
    np.testing.assert_allclose(converted(heist_frames)[0], trained(heist_frames)[0], atol=1e-5)
    # The card's command reproduces the run: rerun as written, it is accepted as the same run (same config and seed)
    # and, with its frames already trained, returns at once.
    command = shlex.split(card["train_command"])
    assert command[:3] == ["uv", "run", "jaxinterp"] and "microbatch_size" not in card["train_command"]
    assert main(command[3:]) == 0


def test_examples_and_attribution_write_sheets_and_overlays(checkpoint, tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["rollout", "--random", "--frames", "64", "--num-envs", "4", "--out", str(data)]) == 0
    out = tmp_path / "ex"
    examples = (
        f"examples --checkpoint {checkpoint} --layer conv_seqs.1.res_block1 --dataset {data} --out {out}"
    )
    assert main([*examples.split(), "--channels", "0-1", "--k", "4", "--diversity", "0.5"]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == [
        "conv_seqs_1_res_block1_0000.png",
        "conv_seqs_1_res_block1_0001.png",
        "conv_seqs_1_res_block1_overview.png",
    ]
    assert main([*examples.split(), "--channels", "1", "--k", "4", "--spatial", "--reuse", "2"]) == 0
    assert (out / "conv_seqs_1_res_block1_0001_spatial.png").is_file()
    assert (out / "conv_seqs_1_res_block1_spatial.png").is_file()
    assert main([*examples.split(), "--nmf", "3", "--k", "2"]) == 0  # NMF directions instead of channels
    assert "3 NMF directions of conv_seqs.1.res_block1" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "nmf").glob("*_000?.png")) == [
        f"conv_seqs_1_res_block1_000{i}.png" for i in range(3)
    ]
    with np.load(out / "nmf" / "conv_seqs_1_res_block1_nmf.npz") as saved:
        assert saved["components"].shape == (3, 32)
    assert main([*examples.split(), "--nmf", "3", "--channels", "1"]) == 2
    assert "leave out --channels" in capsys.readouterr().err
    dense = examples.replace("conv_seqs.1.res_block1", "hidden_fc").split()
    assert main([*dense, "--spatial"]) == 2
    assert "hidden_fc is a dense layer" in capsys.readouterr().err
    assert main([*examples.split(), "--channels", "40"]) == 2
    assert "out of range" in capsys.readouterr().err
    att = tmp_path / "att"
    assert (
        main(
            [
                "attribution",
                "--checkpoint",
                str(checkpoint),
                "--dataset",
                str(data),
                "--frames",
                "0,5",
                "--target",
                "action:3",
                "--method",
                "gxa",
                "--out",
                str(att),
            ]
        )
        == 0
    )
    saved = np.load(next(att.glob("*.npz")))
    assert saved["attributions"].shape[:1] == (2,) and list(saved["frames"]) == [0, 5]

    objects = f"objects --checkpoint {checkpoint} --layer conv_seqs.2.res_block1 --dataset {data} --out {out}"
    assert main([*objects.split(), "--channels", "0-2"]) == 0
    table = capsys.readouterr().out
    assert "| 2 |" in table and "agent" in table
    assert sorted(p.name for p in out.glob("objects.*")) == ["objects.md", "objects.npz", "objects.png"]
    assert (out / "object_maps.png").is_file()
    assert np.load(out / "objects.npz")["z"].shape == (3, 13)


def test_visualize_writes_pngs_sheet_and_npz(checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "vis"
    args = [
        "visualize",
        "--checkpoint",
        str(checkpoint),
        "--layer",
        "conv_seqs.1.res_block1",
        "--channels",
        "0,3",
        "--steps",
        "8",
        "--real-frames",
        "64",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    folder = out / "conv_seqs_1_res_block1"
    assert {p.name for p in folder.iterdir()} >= {
        "channel_000.png",
        "channel_003.png",
        "sheet.png",
        "images.npz",
    }
    assert len(list((tmp_path / "cache" / "jaxinterp" / "color").glob("*.json"))) == 1  # fitted once, cached
    assert "p99" in capsys.readouterr().out
    assert main(args[:5] + ["--channels", "99", "--out", str(out)]) == 2
    assert "99" in capsys.readouterr().err
    # --jitter replaces the standard chain's jitter only; nonsense and a contradiction are one-line errors.
    assert main([*args[:-1], str(tmp_path / "j"), "--channels", "0", "--jitter", "8,4"]) == 0
    settings = json.loads((tmp_path / "j" / "conv_seqs_1_res_block1" / "settings.json").read_text())
    assert settings["transforms"]["jitters"] == [8, 4] and settings["transforms"]["pad"] == 16
    capsys.readouterr()
    for bad, said in (
        (["--jitter", "eight"], "crop sizes"),
        (["--jitter", "8,4", "--no-transforms"], "drop one"),
    ):
        assert main([*args, *bad]) == 2
        assert said in capsys.readouterr().err


def test_visualize_in_context_writes_patches_and_their_frames(checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "ctx"
    args = f"visualize --checkpoint {checkpoint} --layer conv_seqs.1.res_block1 --channels 1 --steps 4"
    args = [*args.split(), "--real-frames", "64", "--out", str(out), "--context", "--context-size", "8"]
    assert main([*args, "--context-batch", "2", "--context-at", "3,2"]) == 0
    folder = out / "conv_seqs_1_res_block1"
    assert {"channel_001.png", "context_001.png", "sheet.png"} <= {p.name for p in folder.iterdir()}
    with np.load(folder / "images.npz") as z:
        assert z["images"].shape == (1, 1, 1, 8, 8, 3)
    settings = json.loads((folder / "settings.json").read_text())
    # The objective defaults to the neuron under the patch; X,Y on the command line, (y, x) in the settings.
    assert "x=3, y=2" in settings["objective"] and settings["context"]["at"] == [2, 3]
    assert settings["transforms"] is None and settings["context"]["size"] == 8
    capsys.readouterr()
    for bad, said in (
        (["--jitter", "8,4"], "drop --jitter"),
        (["--context-at", "two"], "as X,Y"),
        (["--context-at", "0,16"], "outside layer"),
    ):
        assert main([*args, *bad]) == 2
        assert said in capsys.readouterr().err


@pytest.mark.parametrize("preset", [None, "--xla_force_host_platform_device_count=3"])
def test_visualize_entry_exposes_one_cpu_device_per_core(preset):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if preset:
        env["XLA_FLAGS"] = preset
    code = "from jaxinterp.cli.startup import one_cpu_device_per_core as f; f(); import jax; print(len(jax.devices('cpu')))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    cores = len(os.sched_getaffinity(0))
    assert int(out.stdout.split()[-1]) == (3 if preset else cores)  # a count the user set is left alone


@pytest.mark.parametrize("preset", [None, "--xla_cpu_experimental_ynn_fusion_type=dot"])
def test_entry_turns_ynn_fusions_off_unless_told(preset):
    import os
    import subprocess
    import sys

    from jaxinterp.cli.startup import YNN_OFF

    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if preset:
        env["XLA_FLAGS"] = preset
    code = (
        "from jaxinterp.cli.startup import no_ynn_fusions as f; f(); import os, jax, jax.numpy as jnp;"
        "print(float(jax.jit(lambda x: (x @ x).sum())(jnp.ones((4, 4))))); print(os.environ['XLA_FLAGS'])"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    value, flags = out.stdout.split("\n")[-3:-1]
    assert float(value) == 64.0  # XLA knows the flag and runs
    assert flags == (preset or YNN_OFF)  # a setting the user made is left alone


@pytest.mark.parametrize("setting", ["dir", "off", "jax"])
def test_entry_keeps_compiled_programs_on_disk(tmp_path, setting):
    import os
    import subprocess
    import sys

    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "JAXINTERP_"))}
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"  # keep even this small program
    env["JAXINTERP_COMPILE_CACHE"] = "off" if setting == "off" else str(ours)
    if setting == "jax":
        env["JAX_COMPILATION_CACHE_DIR"] = str(theirs)  # the user's own JAX setting wins
    code = (
        "from jaxinterp.cli.startup import persistent_compile_cache as f; f(); import jax, jax.numpy as jnp;"
        "jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((8, 8))).block_until_ready()"
    )
    subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    kept = {
        name: len(list(d.glob("*"))) if d.exists() else 0 for name, d in (("ours", ours), ("theirs", theirs))
    }
    expected = {"dir": ("ours",), "off": (), "jax": ("theirs",)}[setting]
    assert {name for name, n in kept.items() if n} == set(expected)


def test_intervene_plays_an_edit_beside_the_clean_agent(checkpoint, tmp_path, capsys):
    out = tmp_path / "edit"
    edit = "conv_seqs.2.res_block1:3=0"
    argv = ["intervene", "--checkpoint", str(checkpoint), "--edit", edit, "--levels", "2", "--max-steps", "8"]
    assert main([*argv, "--gifs", "0", "--out", str(out)]) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["edit"] for r in rows] == ["clean", edit] and edit in capsys.readouterr().out
    assert (
        main(["intervene", "--checkpoint", str(checkpoint), "--edit", "conv_seqs.9:3=0", "--out", str(out)])
        == 2
    )
    assert "conv_seqs.2.res_block1" in capsys.readouterr().err  # the valid layers are listed


@pytest.mark.slow
def test_the_greedy_evaluation_is_the_argmax_policy_on_the_same_levels(checkpoint):
    from jaxinterp.rl.evaluate import evaluate

    agent = jaxinterp.load_agent(checkpoint)
    options = {"episodes": 2, "num_envs": 2, "progress": False}  # 2: a defined interval
    both = evaluate(agent, with_greedy=True, **options)
    argmax = evaluate(agent, greedy=True, **options)
    assert list(both) == ["agent", "greedy", "random"]
    assert both["greedy"] == argmax["agent"] and both["random"] == argmax["random"]
    assert both["agent"] == evaluate(agent, **options)["agent"]


def _default(fn, name: str):
    return inspect.signature(fn).parameters[name].default


def test_every_option_has_help_and_stated_defaults_are_the_librarys():
    """The CLI passes only the flags given (the library's defaults apply), so the defaults its help states are
    checked against the library here."""
    from jaxinterp.envs.heist import HeistConfig
    from jaxinterp.examples.find import find_examples
    from jaxinterp.report.visualizations import FeatvizSettings
    from jaxinterp.rl.evaluate import evaluate
    from jaxinterp.rl.export import export_agent
    from jaxinterp.sae import SAEConfig
    from jaxinterp.sae.track import track_episodes

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, [*path, name])
            elif not isinstance(action, argparse._HelpAction):
                yield path, action

    actions = list(walk(jaxinterp.cli.build_parser(), []))
    assert [(p, a.dest) for p, a in actions if not a.help] == []
    helps = {(tuple(p), option): a.help for p, a in actions for option in a.option_strings}
    vis, sae = FeatvizSettings(), SAEConfig(d_in=32)
    stated = {
        (("visualize",), "--facets"): vis.facets,
        (("visualize",), "--steps"): vis.steps,
        (("visualize",), "--lr"): vis.lr,
        (("visualize",), "--basis"): vis.basis,
        (("visualize",), "--tv"): vis.tv,
        (("visualize",), "--l2"): vis.l2,
        (("evaluate",), "--episodes"): _default(evaluate, "episodes"),
        (("evaluate",), "--levels"): _default(evaluate, "levels"),
        (("export-agent",), "--episodes"): _default(export_agent, "episodes"),
        (("rollout",), "--num-envs"): HeistConfig().num_envs,
        (("rollout",), "--distribution-mode"): HeistConfig().distribution_mode,
        (("rollout",), "--num-levels"): HeistConfig().num_levels,
        (("rollout",), "--start-level"): HeistConfig().start_level,
        (("examples",), "--k"): _default(find_examples, "k"),
        (("examples",), "--diversity-on"): _default(find_examples, "diversity_on"),
        (("sae", "train"), "--lr"): sae.lr,
        (("sae", "train"), "--steps"): sae.steps,
        (("sae", "train"), "--batch-size"): sae.batch_size,
        (("sae", "track"), "--episodes"): _default(track_episodes, "episodes"),
    }
    for (argv, option), value in stated.items():
        assert f"(default {value}" in helps[argv, option], (argv, option, value)
