"""SAEs: each architecture learns planted sparse features, JumpReLU's estimator, sweep = separate runs, resume =
uninterrupted, SAELens files both ways, metrics by hand."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

from jaxinterp.errors import JaxinterpError
from jaxinterp.sae import files, metrics, model, runs
from jaxinterp.sae.config import SAEConfig, parse_sweep
from jaxinterp.sae.data import ActivationSource, geometric_median
from jaxinterp.sae.train import train_sweep

D_IN, N_FEATURES, SAMPLES = 16, 32, 20000


@pytest.fixture(scope="module")
def planted():
    """Samples that are sparse sums (about 3 of 32) of unit directions, as a 1x1 'layer' over 20,000 frames."""
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(N_FEATURES, D_IN))
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    active = rng.random((SAMPLES, N_FEATURES)) < 3 / N_FEATURES
    x = (active * rng.uniform(0.5, 1.5, (SAMPLES, N_FEATURES))) @ feats
    return feats, ActivationSource(
        x.astype(np.float32).reshape(SAMPLES, 1, 1, D_IN), np.arange(SAMPLES) // 10
    )


def _config(arch, **kw):
    base = {
        "d_in": D_IN,
        "width": 64,
        "arch": arch,
        "k": 4,
        "steps": 1500,
        "batch_size": 512,
        "lr": 3e-3,
        "warmup_steps": 50,
        "sparsity_warmup_steps": 100,
        "dead_samples": 20000,
    }
    return SAEConfig(**base | kw)


ARCHS = {
    "topk": {},
    "batchtopk": {},
    "matryoshka": {"matryoshka_levels": 2},  # its smallest dictionary (32) can hold the 32 planted features
    "jumprelu": {"sparsity_coef": 1.0},
    "relu": {"sparsity_coef": 0.05},
}


@pytest.mark.slow
def test_every_architecture_recovers_planted_features(planted, tmp_path):
    feats, source = planted
    configs = [_config(a, **kw) for a, kw in ARCHS.items()]
    result = train_sweep(configs, source, tmp_path, progress=False)
    first, last = result.history[0], result.history[-1]
    x, _ = source.sample(8192, heldout=True)
    for i, (config, params) in enumerate(zip(result.configs, result.params, strict=True)):
        assert last["loss"][i] < first["loss"][i] / 2, config.arch
        sae = files.from_training(config, params, result.scale, layer="x", model_name="synthetic")
        rec = metrics.reconstruction(sae, x)
        assert rec["fvu"] < 0.15, (config.arch, rec["fvu"])
        w = sae.params.W_dec / np.linalg.norm(sae.params.W_dec, axis=1, keepdims=True)
        best = np.abs(feats @ w.T).max(1)  # each planted direction's closest decoder row
        assert np.median(best) > 0.9, (config.arch, np.round(best, 2))
        if config.arch != "relu":
            assert abs(rec["l0"] - config.k) < 1.5, (config.arch, rec["l0"])


def test_jumprelu_threshold_gradient_is_the_smoothed_loss_derivative():
    """The straight-through gradient of L0 w.r.t. the threshold equals the derivative of L0 with each step
    smoothed into a ramp of width `bandwidth` (exact for the rectangle kernel), checked by finite differences."""
    rng = np.random.default_rng(1)
    pre = jnp.asarray(rng.uniform(-1, 1, (4096, 8)), jnp.float32)
    theta = jnp.asarray(rng.uniform(0.1, 0.5, 8), jnp.float32)
    bw = 0.05
    near_edge = np.abs(np.abs(pre - theta) - bw / 2) < 1e-3  # keep finite differences off the ramps' corners
    pre = jnp.where(near_edge, theta, pre)

    def smoothed_l0(t):
        return jnp.sum(jnp.clip((pre.astype(jnp.float64) - t) / bw + 0.5, 0, 1))

    with jax.enable_x64():
        t64 = theta.astype(jnp.float64)
        h = 1e-4
        fd = np.array(
            [(smoothed_l0(t64.at[i].add(h)) - smoothed_l0(t64.at[i].add(-h))) / (2 * h) for i in range(8)]
        )
    ste = jax.grad(lambda t: jnp.sum(model.step(pre, t, bw)))(theta)
    np.testing.assert_allclose(ste, fd, rtol=1e-3, atol=1e-3)
    assert np.all(np.asarray(ste) < 0)  # raising a threshold lowers L0
    # JumpReLU's output gradient: -(theta / bw) per sample in the window, which is the ramp's derivative there.
    g = jax.grad(lambda t: jnp.sum(model.jumprelu(pre, t, bw)))(theta)
    window = np.abs(np.asarray(pre) - np.asarray(theta)) < bw / 2
    np.testing.assert_allclose(g, -(np.asarray(theta) / bw) * window.sum(0), rtol=1e-5)


def test_topk_with_traced_k_matches_lax_top_k():
    x = jax.random.normal(jax.random.key(0), (64, 40))
    for k in (1, 5, 40):
        z = jax.jit(model.top_k_mask)(x, jnp.int32(k))
        vals, idx = jax.lax.top_k(x, k)
        ref = jnp.zeros_like(x).at[jnp.arange(64)[:, None], idx].set(jax.nn.relu(vals))
        np.testing.assert_array_equal(z, ref)
    b, cut = model.batch_top_k(x, jnp.int32(3))
    assert int(jnp.sum(b > 0)) == 3 * 64  # the 192 largest (all positive here) over the whole batch
    assert float(cut) == float(jnp.sort(x.reshape(-1))[-3 * 64])


def test_a_sweep_equals_its_members_trained_one_by_one(planted, tmp_path):
    _, source = planted
    configs = [
        _config("topk", k=k, seed=s, lr=lr, steps=40)
        for k, s, lr in ((2, 0, 1e-3), (4, 1, 3e-3), (8, 2, 2e-3))
    ]
    swept = train_sweep(configs, source, tmp_path / "sweep", progress=False)
    for i, c in enumerate(configs):
        alone = train_sweep([c], source, tmp_path / f"alone{i}", progress=False)
        for a, b in zip(jax.tree.leaves(swept.params[i]), jax.tree.leaves(alone.params[0]), strict=True):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


def test_resume_equals_uninterrupted(planted, tmp_path, monkeypatch):
    _, source = planted
    configs = [_config("jumprelu", steps=48), _config("topk", steps=48)]
    whole = train_sweep(configs, source, tmp_path / "whole", progress=False)
    calls = {"n": 0}
    original = ActivationSource.batch

    def interrupted(self, seed, step, batch_size):
        calls["n"] += 1
        if calls["n"] == 20:  # inside the second block of 16 steps
            raise KeyboardInterrupt
        return original(self, seed, step, batch_size)

    monkeypatch.setattr(ActivationSource, "batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_sweep(configs, source, tmp_path / "parts", progress=False)
    monkeypatch.setattr(ActivationSource, "batch", original)
    log = [json.loads(r) for r in (tmp_path / "parts" / "metrics.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 16  # the first whole block was kept, nothing after it
    resumed = train_sweep(configs, source, tmp_path / "parts", progress=False)
    for p, q in zip(whole.params, resumed.params, strict=True):
        for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(q), strict=True):
            np.testing.assert_array_equal(a, b)
    assert resumed.history == whole.history


def test_a_sweep_refuses_other_settings_in_the_same_directory(planted, tmp_path):
    _, source = planted
    train_sweep([_config("topk", steps=16)], source, tmp_path, progress=False)
    with pytest.raises(JaxinterpError, match="another SAE sweep"):
        train_sweep([_config("topk", steps=16, k=2)], source, tmp_path, progress=False)


def _random_params(d_in=6, d_sae=10, seed=0):
    rng = np.random.default_rng(seed)
    return model.SAEParams(
        *(rng.normal(size=s).astype(np.float32) for s in ((d_in, d_sae), (d_sae,), (d_sae, d_in), (d_in,))),
        np.abs(rng.normal(size=d_sae)).astype(np.float32),
    )


@pytest.mark.parametrize("arch", ["relu", "topk", "batchtopk", "matryoshka", "jumprelu"])
def test_export_folds_the_scale_and_import_is_exact(arch, tmp_path):
    params, scale = _random_params(), 2.5
    config = SAEConfig(d_in=6, width=10, arch=arch, k=3)
    sae = files.from_training(config, params, scale, layer="conv_seqs.2.res_block1", model_name="m")
    x = np.random.default_rng(1).normal(size=(32, 6)).astype(np.float32)
    # on raw activations the exported SAE gives what the trained one gave on scaled ones, divided by the scale
    z_train = model.encode(sae.arch, params, jnp.asarray(x * scale), jnp.int32(3))
    np.testing.assert_allclose(sae.encode(x), z_train, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sae(x), model.decode(params, z_train) / scale, rtol=1e-5, atol=1e-5)
    files.save_sae(sae, tmp_path, log10_frequency=np.full(10, -2.0))
    back = files.load_sae(tmp_path)
    assert back.arch == sae.arch and back.layer == "conv_seqs.2.res_block1"
    for a, b in zip(sae.params, back.params, strict=True):
        if arch in ("jumprelu", "batchtopk", "matryoshka") or a is not sae.params.threshold:
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(back.encode(x), sae.encode(x))
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["architecture"] == {"relu": "standard", "batchtopk": "jumprelu", "matryoshka": "jumprelu"}.get(
        arch, arch
    )
    assert runs.trained_arch(back) == arch  # a BatchTopK SAE stays one in tables and plots
    assert cfg["normalize_activations"] == "none" and cfg["metadata"]["hook_name"] == "conv_seqs.2.res_block1"
    np.testing.assert_array_equal(files.load_sparsity(tmp_path), np.full(10, -2.0, np.float32))


def test_a_hand_written_saelens_directory_loads(tmp_path):
    """cfg.json + safetensors as SAELens writes them (a TopK SAE, b_dec not applied to the input)."""
    p = _random_params(d_in=4, d_sae=8, seed=3)
    save_file(
        {"W_enc": p.W_enc[:4, :8], "b_enc": p.b_enc[:8], "W_dec": p.W_dec[:8, :4], "b_dec": p.b_dec[:4]},
        str(tmp_path / "sae_weights.safetensors"),
    )
    cfg = {
        "architecture": "topk",
        "d_in": 4,
        "d_sae": 8,
        "k": 2,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": False,
        "normalize_activations": "none",
        "metadata": {"model_name": "someone/heist", "hook_name": "conv_seqs.2.res_block1"},
    }
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    sae = files.load_sae(tmp_path)
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    pre = x @ p.W_enc + p.b_enc  # SAELens without b_dec on the input
    top = np.argsort(-pre, 1)[:, :2]
    ref = np.zeros_like(pre)
    np.put_along_axis(ref, top, np.maximum(np.take_along_axis(pre, top, 1), 0), 1)
    np.testing.assert_allclose(sae.encode(x), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sae(x), ref @ p.W_dec + p.b_dec, rtol=1e-5, atol=1e-5)
    with pytest.raises(JaxinterpError, match="d_in=4 channels but the layer has 32"):
        files.load_sae(tmp_path, d_in=32)
    (tmp_path / "cfg.json").write_text("{not json")
    with pytest.raises(JaxinterpError, match="cannot read the SAE"):
        files.load_sae(tmp_path)


def test_metrics_by_hand():
    p = _random_params(d_in=4, d_sae=6, seed=5)
    sae = files.SAE("relu", 1, p, "x", {})
    x = np.random.default_rng(2).normal(size=(100, 4)).astype(np.float32)
    z = np.maximum((x - p.b_dec) @ p.W_enc + p.b_enc, 0)
    xh = z @ p.W_dec + p.b_dec
    rec = metrics.reconstruction(sae, x, batch=32)
    assert rec["fvu"] == pytest.approx(((x - xh) ** 2).sum() / ((x - x.mean(0)) ** 2).sum(), rel=1e-5)
    assert rec["l0"] == pytest.approx((z > 0).sum(1).mean())
    assert rec["dead_fraction"] == pytest.approx(((z > 0).sum(0) == 0).mean())
    present = np.zeros((4, 3), bool)
    present[[0, 1], 0] = True
    values = np.array([[1.0], [0.0], [2.0], [0.0]])
    s = metrics.object_scores(values, present)
    assert s.precision[0, 0] == 0.5 and s.recall[0, 0] == 0.5 and s.f1[0, 0] == 0.5
    assert np.isnan(s.f1[0, 1])  # a class that never occurs has no F1
    # chosen on one set, scored on another: feature 1 wins the first set, and is scored (badly) on the second
    a = np.array([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    b = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    pa = pb = np.array([[True], [True], [False]])
    assert metrics.choose_and_score(pa, a, pb, b) == [(1, 0.0)]
    ((f, f1),) = metrics.choose_and_score(pa, a, pb, b, thresholds=lambda v: np.array([[0.5, 0.5]]))
    assert (f, f1) == (1, 0.0)
    # a class at every position leaves nothing to tell apart: no F1, even for a feature that fires everywhere
    everywhere = np.ones((3, 1), bool)
    ((_, f1),) = metrics.choose_and_score(everywhere, a + 1, pb, b)
    assert np.isnan(f1)


def test_the_frontier_groups_members_by_how_they_were_trained():
    def member(arch, trained_as, l0):
        return {"architecture": arch, "trained_as": trained_as, "reconstruction": {"l0": l0, "fvu": 1 / l0}}

    summary = [
        member("jumprelu", "batchtopk", 6.5),
        member("jumprelu", "jumprelu", 8.2),
        member("topk", "topk", 8),
    ]
    groups = runs.frontier_groups(summary)
    assert groups == {"batchtopk": [(6.5, 1 / 6.5)], "jumprelu": [(8.2, 1 / 8.2)], "topk": [(8, 1 / 8)]}


def test_the_summary_shows_the_mean_absorbed_fraction_over_the_colours_present():
    def entry(name, absorption):
        r = {"l0": 8, "fvu": 0.02, "dead_fraction": 0.0, "dense_fraction": 0.05}
        p = {"action_agreement": 0.9, "move_agreement": 0.95, "kl_score_zero": 0.99}
        return {"sae": f"sweep/{name}", "reconstruction": r, "policy": p} | absorption

    children = {"key": {"children": {"key_blue": {"absorbed": 0.2}, "key_red": {"absorbed": float("nan")}}}}
    children["lock"] = {"children": {"lock_red": {"absorbed": 0.4}}}
    lines = runs.format_summary([entry("new", {"absorption": {"latents": children}}), entry("old", {})])
    header, new, old = lines.splitlines()
    assert header.split()[9] == "absorbed"  # after "KL score"
    assert new.split()[8] == "0.300" and old.split()[8] == "-"  # an eval.json from before the check has none


def test_config_and_sweep_errors():
    with pytest.raises(JaxinterpError, match="k \\(=300\\) must be <= width"):
        SAEConfig(d_in=32, k=300)
    with pytest.raises(JaxinterpError, match="width \\(=0\\) must be an int >= 1"):
        SAEConfig(d_in=32, width=0)
    with pytest.raises(JaxinterpError, match="unknown SAE architecture 'gated'"):
        SAEConfig(d_in=32, arch="gated")
    assert parse_sweep("k=4,8 arch=topk,jumprelu") == [
        {"k": 4, "arch": "topk"},
        {"k": 4, "arch": "jumprelu"},
        {"k": 8, "arch": "topk"},
        {"k": 8, "arch": "jumprelu"},
    ]
    with pytest.raises(JaxinterpError, match="unknown sweep field 'kk'"):
        parse_sweep("kk=4")
    with pytest.raises(JaxinterpError, match="expects int values"):
        parse_sweep("k=four")


def test_matryoshka_loss_is_the_mean_error_of_its_nested_dictionaries():
    config = SAEConfig(d_in=6, width=16, arch="matryoshka", k=3, matryoshka_levels=3)
    assert config.prefixes == (4, 8, 16)
    params = _random_params(d_in=6, d_sae=16)
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(32, 6)), jnp.float32)
    z = jnp.asarray(np.maximum(rng.normal(size=(32, 16)), 0), jnp.float32)
    by_hand = np.mean([np.mean((x - (z[:, :m] @ params.W_dec[:m] + params.b_dec)) ** 2) for m in (4, 8, 16)])
    mse, x_hat = model.matryoshka_mse(config.prefixes, params, x, z)
    np.testing.assert_allclose(mse, by_hand, rtol=1e-5)
    np.testing.assert_allclose(x_hat, model.decode(params, z), rtol=1e-5, atol=1e-5)  # the whole dictionary's
    # the loss's reconstruction term is this on BatchTopK's latents; with one level it is BatchTopK's own
    hyper, dead = model.hyper_of(config), jnp.zeros(16, bool)
    _, (zb, terms) = model.loss(config, params, x, hyper, dead, jnp.float32(1))
    np.testing.assert_allclose(
        terms.recon, model.matryoshka_mse(config.prefixes, params, x, zb)[0], rtol=1e-6
    )
    one = dataclasses.replace(config, matryoshka_levels=1)
    batch = dataclasses.replace(config, arch="batchtopk")
    for a, b in zip(
        model.loss(one, params, x, hyper, dead, 1.0)[1][1],
        model.loss(batch, params, x, hyper, dead, 1.0)[1][1],
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    with pytest.raises(JaxinterpError, match="width \\(=4\\) must be >= 8"):
        SAEConfig(d_in=6, width=4, k=2, arch="matryoshka", matryoshka_levels=4)


def test_geometric_median_resists_outliers():
    x = np.concatenate([np.zeros((99, 3)), np.full((1, 3), 1000.0)])
    assert np.abs(geometric_median(x)).max() < 1e-3


def test_auxk_reconstructs_the_residual_from_the_largest_dead_latents_without_b_dec():
    p = _random_params(d_in=6, d_sae=10, seed=7)
    rng = np.random.default_rng(0)
    pre = rng.normal(size=(5, 10)).astype(np.float32)
    err = rng.normal(size=(5, 6)).astype(np.float32)
    dead = np.arange(10) % 2 == 0  # 5 dead latents, k_aux = 3 of them per sample
    got = model.auxk(p, jnp.asarray(pre), jnp.asarray(err), jnp.asarray(dead), 3)
    z = np.zeros_like(pre)
    for i in range(5):
        top = np.flatnonzero(dead)[np.argsort(-pre[i, dead])[:3]]
        z[i, top] = np.maximum(pre[i, top], 0)
    ref = ((err - z @ p.W_dec) ** 2).sum() / (
        (err - err.mean(0)) ** 2
    ).sum()  # no b_dec in the reconstruction
    assert float(got) == pytest.approx(ref, rel=1e-5)
    assert float(model.auxk(p, jnp.asarray(pre), jnp.asarray(err), jnp.zeros(10, bool), 3)) == 0.0
    few = np.arange(10) == 4  # fewer dead latents than k_aux: all of them reconstruct
    z = np.where(few, np.maximum(pre, 0), 0)
    ref = ((err - z @ p.W_dec) ** 2).sum() / ((err - err.mean(0)) ** 2).sum()
    got = model.auxk(p, jnp.asarray(pre), jnp.asarray(err), jnp.asarray(few), 3)
    assert float(got) == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize("kind", ["normal", "heavy tail", "ties", "spread", "one row"])
def test_kth_largest_is_exact(kind):
    """The early-stopping search returns the exact k-th largest value on every row, at both ends of k too."""
    rng = np.random.default_rng(3)
    v = rng.normal(size=(512, 96)).astype(np.float32)
    v = {
        "normal": v,
        "heavy tail": v * np.exp(2 * v),
        "ties": np.round(v * 2) / 2,  # many rows hold their k-th value several times
        "spread": v * np.float32(10.0) ** rng.integers(-30, 30, size=v.shape),  # 60 decades in one row
        "one row": np.maximum(v, 0).reshape(1, -1),  # batchtopk's shape, with tied zeros
    }[kind].astype(np.float32)
    search = jax.jit(model.kth_largest)
    for k in (1, 2, 7, 33, v.shape[1] // 2, v.shape[1]):
        expected = np.sort(v, -1)[:, -k][:, None]
        np.testing.assert_array_equal(search(jnp.asarray(v), jnp.int32(k)), expected, err_msg=f"k={k}")


def _exact_params() -> model.SAEParams:
    """relu([x, -x]) decoded by [I; -I]: an SAE (32 -> 64) that reconstructs 32 channels exactly."""
    eye = np.eye(32, dtype=np.float32)
    zeros = np.zeros(64, np.float32)
    return model.SAEParams(
        np.concatenate([eye, -eye], 1), zeros, np.concatenate([eye, -eye], 0), np.zeros(32, np.float32), zeros
    )


def test_policy_fidelity_of_an_exact_sae_is_perfect(heist_frames):
    """relu([x, -x]) decoded by [I; -I] reconstructs x exactly: the spliced agent is the clean one."""
    import jaxinterp

    agent = jaxinterp.Agent.random("impala", seed=1)
    layer = "conv_seqs.2.res_block1"
    params = _exact_params()
    sae = files.SAE("relu", 1, params, layer, {})
    mean_act = np.asarray(agent.activations(heist_frames, [layer])[layer]).mean(0)
    fid = metrics.policy_fidelity(agent, sae, heist_frames, mean_act)
    assert fid["action_agreement"] == 1.0 and fid["move_agreement"] == 1.0
    assert fid["kl"] < 1e-9 and fid["value_change"] < 1e-5
    assert fid["zero_ablation"]["kl"] > 1e-6  # ablation does change the random agent's nearly flat policy
    assert fid["kl_score_zero"] == pytest.approx(1.0, abs=1e-3)


def test_an_exact_sae_spliced_into_the_policy_acts_as_the_clean_agent(heist_frames):
    """With an exact reconstruction the spliced policy samples the clean policy's actions from the same key (so it
    plays the same episodes on the same levels: `spliced_episodes`)."""
    import jaxinterp
    from jaxinterp.envs.rollout import agent_policy

    agent = jaxinterp.Agent.random("impala", seed=2)
    params = _exact_params()
    sae = files.SAE("relu", 1, params, "conv_seqs.2.res_block1", {})
    spliced, clean = metrics.spliced_policy(agent, sae), agent_policy(agent)
    for seed in range(3):
        key = jax.random.key(seed)
        np.testing.assert_array_equal(spliced(key, heist_frames)[0], clean(key, heist_frames)[0])
    broken = sae._replace(params=params._replace(W_dec=1000 * params.W_dec))  # the layer x1000: other logits
    acts = [
        np.asarray(metrics.spliced_policy(agent, broken)(jax.random.key(s), heist_frames)[0])
        for s in range(3)
    ]
    assert any((a != np.asarray(clean(jax.random.key(s), heist_frames)[0])).any() for s, a in enumerate(acts))


def test_absorption_finds_the_parent_latent_silent_where_a_child_latent_took_over():
    cls = {c: j for j, c in enumerate(metrics.OBJECT_CLASSES)}
    present = np.zeros((300, len(metrics.OBJECT_CLASSES)), bool)
    present[:100, cls["key_blue"]] = present[100:200, cls["key_green"]] = present[200:250, cls["key_red"]] = (
        True
    )
    z = np.zeros((300, 4), np.float32)
    z[:200, 0] = 1.0  # "any key", except red keys,
    z[200:250, 1] = 1.0  # where a red-key latent fires instead
    z[100:200, 2] = 1.0  # a green-key latent beside the parent
    out = metrics.absorption(present, z, present, z)
    assert set(out) == {"key"}  # no lock anywhere: nothing to check
    key = out["key"]
    assert key["feature"] == 0 and key["f1"] == pytest.approx(2 * 0.8 / 1.8)
    got = {c: (v["feature"], v["recall"], v["absorbed"]) for c, v in key["children"].items()}
    assert got == {"key_blue": (0, 1.0, 0.0), "key_green": (2, 1.0, 0.0), "key_red": (1, 0.0, 1.0)}
    # raw channels with candidate thresholds: the same verdict once the features are shifted off zero
    shifted = metrics.absorption(present, z - 0.5, present, z - 0.5, thresholds=metrics.channel_thresholds)
    assert shifted["key"]["children"]["key_red"]["absorbed"] == 1.0


def test_sparse_probe_finds_the_informative_feature():
    rng = np.random.default_rng(0)
    y = rng.random(4000) < 0.1
    x = rng.normal(size=(4000, 20))
    x[:, 7] += 3 * y  # feature 7 carries the class
    z_tr, z_te = metrics.standardize(x[:2000], x[2000:])
    f1 = metrics.sparse_probe(z_tr, y[:2000], z_te, y[2000:], k=1)
    assert f1 > 0.6
    shuffled = metrics.sparse_probe(z_tr, y[:2000], z_te, rng.permutation(y[2000:]), k=1)
    assert shuffled < 0.3
    assert np.isnan(metrics.sparse_probe(z_tr, np.zeros(2000, bool), z_te, y[2000:], k=1))


def test_members_vmapped_in_one_pass_equal_members_in_turn(planted):
    """The accelerator path (all members in one vmapped pass) and the CPU path (a lax.map over members) agree."""
    from jaxinterp.sae.train import make_train, stack_hypers

    _, source = planted
    configs = [_config("topk", k=k, seed=s, steps=16) for k, s in ((2, 0), (4, 1), (8, 2), (3, 3))]
    xs = jnp.asarray(np.stack([source.batch(0, t, 512) for t in range(16)]))
    out = []
    for member_pass in (1, 4, 2):
        trainer = make_train(configs[0], devices=1, member_pass=member_pass)
        states = trainer.init(jnp.stack([jax.random.key(c.seed) for c in configs]), jnp.zeros(D_IN))
        out.append(trainer.update(states, stack_hypers(configs), xs))
    for other in out[1:]:
        for a, b in zip(jax.tree.leaves(out[0]), jax.tree.leaves(other), strict=True):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


def test_finetuning_for_the_policy_lowers_its_kl_and_keeps_k(heist_frames):
    """A random TopK SAE on the shipped agent's last stage, fine-tuned on 15 frames' policy KL: the KL on those
    frames falls, k and the layer stay, the settings are recorded; other architectures and layers are refused."""
    import jaxinterp
    from jaxinterp.sae.finetune import finetune_for_policy
    from jaxinterp.weights.store import default_checkpoint

    agent = jaxinterp.load_agent(default_checkpoint())
    layer = "conv_seqs.2.res_block1"
    acts = np.asarray(agent.activations(heist_frames, [layer])[layer])
    source = ActivationSource(acts, np.arange(len(acts)), layer=layer)  # every 10th episode held out: frame 9
    config = SAEConfig(d_in=32, width=64, arch="topk", k=4)
    params = jax.tree.map(
        np.asarray, model.init_params(config, jax.random.key(0), acts.reshape(-1, 32).mean(0))
    )
    sae = files.SAE("topk", 4, params, layer, {"jaxinterp": {"input_scale": 1.0}})
    train = heist_frames[source.train_frames]
    mean_act = acts.mean(0)
    before = metrics.policy_fidelity(agent, sae, train, mean_act)["kl"]
    tuned = finetune_for_policy(agent, sae, source, steps=150, lr=1e-3, progress=False)
    after = metrics.policy_fidelity(agent, tuned, train, mean_act)["kl"]
    assert after < 0.5 * before, (before, after)
    assert (tuned.arch, tuned.k, tuned.layer) == ("topk", 4, layer)
    assert tuned.cfg["jaxinterp"]["finetuned_for_policy"]["steps"] == 150
    assert tuned.cfg["jaxinterp"]["input_scale"] == 1.0
    # AuxK trains latents that never fire (here 8 whose pre-activation is a constant 1e-3, never in the top 4):
    # with it their decoder rows move, without it they get no gradient at all.
    idle = np.arange(8)
    p = params._replace(W_enc=params.W_enc.copy(), b_enc=params.b_enc.copy())
    p.W_enc[:, idle], p.b_enc[idle] = 0.0, 1e-3
    sleepy = sae._replace(params=p)
    for coef in (1 / 32, 0.0):
        out = finetune_for_policy(
            agent, sleepy, source, steps=3, aux_coef=coef, dead_samples=1, progress=False
        )
        moved = np.abs(out.params.W_dec[idle] - p.W_dec[idle]).max()
        assert (moved > 1e-4) if coef else (moved == 0.0), (coef, moved)
    with pytest.raises(JaxinterpError, match="only for TopK"):
        finetune_for_policy(agent, sae._replace(arch="relu"), source, steps=1, progress=False)
    with pytest.raises(JaxinterpError, match="reads conv_seqs.1"):
        finetune_for_policy(
            agent, sae._replace(layer="conv_seqs.1.res_block1"), source, steps=1, progress=False
        )
