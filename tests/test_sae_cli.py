"""`jaxinterp sae …` end to end on a random agent and a tiny recording: train a sweep, eval, track, export, import,
and one-line errors."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

import jaxinterp
from jaxinterp.cli import main
from jaxinterp.sae import load_sae

LAYER = "conv_seqs.2.res_block1"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return jaxinterp.save_agent(
        jaxinterp.Agent.random("impala", seed=3), tmp_path_factory.mktemp("ckpt") / "a.pt"
    )


@pytest.fixture(scope="module")
def sweep(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("sae")
    argv = [
        "sae",
        "train",
        "--checkpoint",
        str(checkpoint),
        "--frames",
        "640",
        "--steps",
        "32",
        "--batch-size",
        "256",
    ]
    argv += ["--width", "16", "--sweep", "arch=topk,matryoshka,jumprelu k=2,4", "--out", str(out)]
    assert main(argv) == 0
    return out


@pytest.mark.slow
def test_train_writes_every_member_in_saelens_layout(sweep, capsys):
    members = sorted(p.name for p in sweep.iterdir() if (p / "cfg.json").exists())
    assert len(members) == 6 and all(m.split("-")[0] in ("topk", "matryoshka", "jumprelu") for m in members)
    for m in members:
        sae = load_sae(sweep / m)
        assert (sae.d_in, sae.d_sae, sae.layer) == (32, 16, LAYER)
        ev = json.loads((sweep / m / "eval.json").read_text())
        assert 0 <= ev["policy"]["action_agreement"] <= 1 and ev["reconstruction"]["fvu"] >= 0
        assert set(ev["objects"]) >= {"agent", "key_blue", "gem"}
        absorption = ev["absorption"]
        assert set(absorption["latents"]) == set(absorption["channels"]) == {"key", "lock"}
        for parent in [*absorption["latents"].values(), *absorption["channels"].values()]:
            for child in parent["children"].values():  # absorbed only where the parent feature is silent
                assert (
                    child["recall"] != child["recall"] or 0 <= child["absorbed"] <= 1 - child["recall"] + 1e-9
                )
    assert (sweep / "frontier.png").exists() and (sweep / "summary.json").exists()


@pytest.mark.slow
def test_eval_track_export_import(sweep, checkpoint, tmp_path, capsys):
    member = next(p for p in sorted(sweep.iterdir()) if (p / "cfg.json").exists())
    assert main(["sae", "eval", "--checkpoint", str(checkpoint), "--sae", str(member)]) == 0
    assert "FVU" in capsys.readouterr().out
    track = tmp_path / "track"
    argv = ["sae", "track", "--checkpoint", str(checkpoint), "--sae", str(member), "--latent", "1"]
    assert main([*argv, "--object", "agent", "--episodes", "1", "--max-steps", "6", "--out", str(track)]) == 0
    assert Image.open(track / "episode_0.gif").size == (
        256,
        256,
    )  # Pillow merges repeated frames: count in json
    assert Image.open(track / "episode_0_strip.png").height == 256
    result = json.loads((track / "tracking.json").read_text())
    assert result["latent"] == 1 and result["object"] == "agent" and result["episodes"][0]["frames"] == 6
    assert main(["sae", "export", "--sae", str(member), "--out", str(tmp_path / "exported")]) == 0
    dst = tmp_path / "imported"
    assert (
        main(
            ["sae", "import", str(tmp_path / "exported"), "--checkpoint", str(checkpoint), "--out", str(dst)]
        )
        == 0
    )
    a, b = load_sae(member), load_sae(dst)
    for x, y in zip(a.params, b.params, strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.slow
def test_finetune_writes_a_topk_sae_beside_its_source_and_refuses_others(sweep, checkpoint, capsys):
    topk = next(p for p in sorted(sweep.iterdir()) if p.name.startswith("topk") and (p / "cfg.json").exists())
    argv = ["sae", "finetune", "--checkpoint", str(checkpoint), "--steps", "5"]
    assert main([*argv, "--sae", str(topk)]) == 0
    tuned = topk.with_name(topk.name + "-policy")
    assert "FVU" in capsys.readouterr().out and (tuned / "eval.json").is_file()
    sae = load_sae(tuned)
    assert (sae.arch, sae.k, sae.layer) == ("topk", load_sae(topk).k, LAYER)
    assert sae.cfg["jaxinterp"]["finetuned_for_policy"]["steps"] == 5
    jump = next(p for p in sorted(sweep.iterdir()) if p.name.startswith("jumprelu"))
    assert "only for TopK" in _error([*argv, "--sae", str(jump)], capsys)
    assert "one member directory" in _error([*argv, "--sae", str(sweep)], capsys)
    shutil.rmtree(tuned)  # the sweep fixture is shared: leave it as it was


def _error(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("jaxinterp: error:") and "\n" not in err
    return err


def test_errors_are_one_line(checkpoint, tmp_path, capsys):
    base = ["sae", "train", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "x")]
    assert "valid layers:" in _error([*base, "--layer", "conv9"], capsys)
    assert "must be <= width" in _error([*base, "--width", "4", "--k", "8"], capsys)
    assert "width (=0) must be an int >= 1" in _error([*base, "--width", "0"], capsys)
    assert "unknown sweep field" in _error([*base, "--sweep", "kk=1"], capsys)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "cfg.json").write_text(json.dumps({"architecture": "topk", "d_in": 7, "d_sae": 2, "k": 1}))
    from safetensors.numpy import save_file

    z = np.zeros
    save_file(
        {
            "W_enc": z((7, 2), np.float32),
            "b_enc": z(2, np.float32),
            "W_dec": z((2, 7), np.float32),
            "b_dec": z(7, np.float32),
        },
        str(bad / "sae_weights.safetensors"),
    )
    err = _error(
        [
            "sae",
            "import",
            str(bad),
            "--checkpoint",
            str(checkpoint),
            "--layer",
            LAYER,
            "--out",
            str(tmp_path / "y"),
        ],
        capsys,
    )
    assert "d_in=7" in err and "32 channels" in err
    (tmp_path / "empty").mkdir()
    evaluate = ["sae", "eval", "--checkpoint", str(checkpoint), "--sae"]
    assert "no SAE in" in _error([*evaluate, str(tmp_path / "empty")], capsys)
    assert "no dataset for" in _error([*evaluate, str(bad)], capsys)


@pytest.mark.slow
def test_report_section_has_a_row_per_latent(checkpoint, tmp_path):
    """The report's SAE section alone (the page around it is tested in test_agent_report): every image written."""
    import re

    from jaxinterp.envs.heist import HeistConfig
    from jaxinterp.envs.rollout import collect, random_policy
    from jaxinterp.report import latents as report_sae
    from jaxinterp.sae import SAEConfig, files, model

    rng = np.random.default_rng(0)
    shapes = ((32, 8), (8,), (8, 32), (32,), (8,))
    params = model.SAEParams(*(rng.normal(size=s).astype(np.float32) for s in shapes))
    config = SAEConfig(d_in=32, width=8, k=2)
    sae_dir = files.save_sae(
        files.from_training(config, params, 1.0, layer=LAYER, model_name="t"), tmp_path / "sae"
    )
    data = collect(
        tmp_path / "data",
        frames=32,
        policy=random_policy(),
        env_config=HeistConfig(num_envs=8),
        seed=0,
        progress=False,
    )
    agent = jaxinterp.load_agent(checkpoint)
    out = tmp_path / "report"
    section = report_sae.write_sae_section(
        agent,
        sae_dir,
        data,
        out,
        steps=2,
        k=2,
        diversity=0.0,
        color_matrix=None,
        real_frames=data.evenly_spaced(16)["frames"],
        latents=4,
        progress=False,
    )
    assert [r["latent"] for r in section["rows"]] == [0, 1, 2, 3]
    page = report_sae.section_html(section, 64)
    links = set(re.findall(r"(?:src|href)='([^'#]+)'", page))
    assert len(links) >= 4 * 4 and all((out / link).is_file() for link in links), sorted(links)
