"""The published PPO baseline curve shipped with jaxinterp, and the learning curve drawn beside it."""

import numpy as np
from PIL import Image

from jaxinterp.rl.baseline import baseline_curve, has_baseline
from jaxinterp.rl.train import plot_learning_curve


def test_baseline_curve_is_the_published_one():
    b = baseline_curve()
    assert np.all(np.diff(b.frames) > 0) and b.frames[-1] > 49.9e6
    # openai/train-procgen's easy-all runs as its graph.py smooths them (issue 24's anchor table: 4.43 at 10M,
    # 7.18 +- 0.17 at 25M, 7.23 +- 0.18 at 27M, 9.38 at 50M); the file keeps every 8th update (131,072 frames)
    near = lambda m: int(np.argmin(np.abs(b.frames - m)))
    for frames, published in ((10e6, 4.43), (25e6, 7.18), (27e6, 7.23), (50e6, 9.38)):
        assert abs(b.return_mean[near(frames)] - published) < 0.15, frames
    assert 0.1 < b.return_std[near(25e6)] < 0.35 and round(b.entropy_mean[-1], 2) == 1.86
    np.testing.assert_allclose(b.success_mean, b.return_mean / 10)
    assert has_baseline({"distribution_mode": "easy", "num_levels": 0})
    assert not has_baseline({"distribution_mode": "hard", "num_levels": 0})
    assert not has_baseline({"distribution_mode": "easy", "num_levels": 200})


def test_learning_curve_draws_the_baseline_beside_the_run(tmp_path):
    rng = np.random.default_rng(0)
    history = [
        {
            "frames": 16384 * (i + 1),
            "episode_return": 3 + i / 50,
            "success_rate": 0.3 + i / 500,
            "entropy": 2.7 - i / 1000,
            "_returns": list(rng.choice([0.0, 10.0], 4)),
            "_successes": list(rng.choice([0.0, 1.0], 4)),
        }
        for i in range(100)
    ]
    plain, beside = tmp_path / "plain.png", tmp_path / "beside.png"
    plot_learning_curve(history, plain)
    plot_learning_curve(history, beside, baseline=baseline_curve())
    with Image.open(plain) as a, Image.open(beside) as b:
        assert a.size == b.size
        # the baseline's dashed grey line adds dark-grey pixels to every panel
        grey = lambda im: np.sum(np.all(np.abs(np.asarray(im.convert("RGB"), int) - 89) < 12, -1))
        assert grey(b) > grey(a) + 300
