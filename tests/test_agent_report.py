"""`jaxinterp report`: one page per agent, every image it shows written, resumable, other settings refused."""

import json
import re

import numpy as np
import pytest

import jaxinterp
from jaxinterp.cli import main
from jaxinterp.envs.dataset import Dataset
from jaxinterp.errors import JaxinterpError
from jaxinterp.examples.object_response import load_npz
from jaxinterp.featviz import transforms as tf
from jaxinterp.report import agent_report

LAYER = "conv_seqs.1.res_block1"


def test_report_shows_every_channel_and_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    checkpoint = jaxinterp.save_agent(jaxinterp.Agent.random("impala", seed=3), tmp_path / "agent.pt")
    out = tmp_path / "report"
    args = ["report", "--checkpoint", str(checkpoint), "--layers", LAYER, "--frames", "64", "--k", "4"]
    args += ["--steps", "4", "--out", str(out)]
    assert main(args) == 0
    assert "index.html" in capsys.readouterr().out

    page = (out / "index.html").read_text()
    links = set(re.findall(r"(?:src|href)='([^'#]+)'", page))
    assert links and all((out / link).is_file() for link in links), sorted(links)
    state = json.loads((out / "report.json").read_text())
    assert state["done"] == [f"examples:{LAYER}", f"spatial:{LAYER}", f"objects:{LAYER}"]
    (section,) = state["layers"]
    assert [c["channel"] for c in section["channels"]] == list(range(32))
    assert all(f"channel_{c:03d}.png" in page for c in range(32))
    assert all(f"conv_seqs_1_res_block1_{c:04d}_spatial.png" in page for c in range(32))

    # The objects column is the object-response file's ranking (floor and wall left out).
    response = load_npz(out / "objects" / "conv_seqs_1_res_block1" / "objects.npz")
    keep = [
        i for i, c in enumerate(response.classes) if c not in ("floor", "wall") and response.pixels[i] > 0
    ]
    for f, ch in enumerate(section["channels"]):
        best = keep[int(np.nanargmax(response.z[f, keep]))]
        assert ch["objects"][0] == [response.classes[best], float(response.z[f, best])]
    # The featviz columns are each visualization's own value and the real-frame percentile it is measured against.
    assert {view: objective for view, (objective, _) in agent_report.VIEWS.items()} == {
        "featviz": "channel",
        "neuron": "neuron",
    }
    for view in agent_report.VIEWS:
        with np.load(out / view / "conv_seqs_1_res_block1" / "images.npz") as z:
            values, p999 = z["values"][-1].max(axis=1), z["percentiles"][1]
        assert [c[view]["value"] for c in section["channels"]] == values.tolist()
        assert [c[view]["real_p999"] for c in section["channels"]] == p999.tolist()
        assert section[view]["beat_p999"] == np.mean(values > p999)
    settings = json.loads((out / "neuron" / "conv_seqs_1_res_block1" / "settings.json").read_text())
    assert settings["objective"].startswith("neuron(")
    assert settings["transforms"]["jitters"] == list(tf.NEURON_JITTERS) != list(tf.DEFAULT_JITTERS)

    # The max-in-play column is the channel's highest activation at any position of any recorded frame.
    agent = jaxinterp.load_agent(checkpoint)
    frames = Dataset(out / "data").get(slice(None), ["frames"])["frames"]
    peak = np.asarray(agent.activations(frames, [LAYER])[LAYER]).max(axis=(0, 1, 2))
    np.testing.assert_allclose([c["max_in_play"] for c in section["channels"]], peak, rtol=1e-5, atol=1e-6)
    assert section["never_fired"] == np.sum(peak <= 0)

    # Rerunning resumes: the dataset, featviz chunks and finished steps are not computed again.
    def fail(*a, **k):
        raise AssertionError("a finished step ran again")

    monkeypatch.setattr(agent_report, "find_examples", fail)
    monkeypatch.setattr(agent_report, "object_response", fail)
    monkeypatch.setattr(agent_report, "spatial_examples", fail)
    assert main(args) == 0
    assert (out / "index.html").read_text() == page
    capsys.readouterr()

    # A wrong layer name is refused before anything is recorded.
    assert main([*args[:3], "--layers", "conv9", "--out", str(tmp_path / "bad")]) == 2
    assert "unknown layer 'conv9'" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    with pytest.raises(JaxinterpError, match="hidden_fc has none"):
        agent_report.write_agent_report(
            agent, Dataset(out / "data"), tmp_path / "dense", layers=["hidden_fc"]
        )

    # Other settings in the same folder are refused in one line.
    assert main([*args[:-2], "--k", "8", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "report made with another k " in err and len(err.strip().splitlines()) == 1
