"""The shipped default agent, ``weights/heist-impala.pt``, against the reference torch model on real Heist frames.

Both sides read the same file independently: jaxinterp with its own pickle reader (`jaxinterp.load_agent`, no
torch), torch with ``torch.load(weights_only=True)`` into the pfrl-layout model of ``tests/torch_models.py``
(``load_state_dict(strict=True)``: every key present, no key left over). Then every layer the torch model hooks,
the ReLUs jaxinterp names after them, and the logits and value must agree at the tolerance of the random-weight
parity test in ``test_models.py`` (measured on the shipped agent: at most 5.7e-6, at ``conv_seqs.2.conv`` whose
largest magnitude is 7.9; logits 2.5e-6, value 9.5e-7).
"""

from pathlib import Path

import numpy as np
import pytest
from conftest import needs_torch

import jaxinterp
from jaxinterp.weights.store import default_checkpoint, read_state_dict

SHIPPED = Path(__file__).resolve().parents[1] / "weights" / "heist-impala.pt"
ATOL = 1e-5  # as test_models.test_parity_with_torch_on_heist_frames


@pytest.fixture(scope="module")
def agent():
    return jaxinterp.load_agent(SHIPPED)


def test_shipped_agent_is_the_documented_one(agent, monkeypatch):
    monkeypatch.delenv("JAXINTERP_WEIGHTS", raising=False)
    # What every command loads without --checkpoint.
    assert default_checkpoint().resolve() == SHIPPED.resolve()
    assert agent.arch.name == "impala" and agent.num_actions == 15
    assert agent.num_params == 626_256  # weights/heist-impala.card.json
    # The .safetensors copy holds the same tensors, bit for bit.
    pt, st = read_state_dict(SHIPPED), read_state_dict(SHIPPED.with_suffix(".safetensors"))
    assert set(pt) == set(st)
    for name in pt:
        np.testing.assert_array_equal(pt[name], st[name], err_msg=name)


@needs_torch
def test_shipped_weights_match_torch_on_heist_frames(agent, heist_frames):
    import torch
    from torch_models import TORCH_MODELS, hooked_activations

    model = TORCH_MODELS["impala"](num_actions=15).eval()
    model.load_state_dict(torch.load(SHIPPED, weights_only=True), strict=True)
    hooks, (logits_t, value_t) = hooked_activations(model, heist_frames)
    logits, value = agent(heist_frames)
    np.testing.assert_allclose(logits, logits_t, atol=ATOL, rtol=0)
    np.testing.assert_allclose(value, value_t, atol=ATOL, rtol=0)

    hooked = [n for n in hooks if n in agent.layer_shapes]
    # every torch module is a jaxinterp layer (the pfrl model has no dropout)
    assert set(hooks) == set(hooked), set(hooks) - set(hooked)
    relus = [n for n in agent.layer_names if n.endswith(".relu") and n[: -len(".relu")] in hooks]
    assert relus  # the post-ReLU views that torch computes functionally
    acts = agent.activations(heist_frames, hooked + relus)
    for name in hooked:
        np.testing.assert_allclose(acts[name], hooks[name], atol=ATOL, rtol=0, err_msg=name)
    for name in relus:
        np.testing.assert_allclose(
            acts[name], np.maximum(hooks[name[: -len(".relu")]], 0), atol=ATOL, rtol=0, err_msg=name
        )
    # The trained policy is not degenerate on these frames: several actions are chosen, values differ.
    assert len(set(np.asarray(logits).argmax(1).tolist())) > 1 and np.ptp(np.asarray(value)) > 0
