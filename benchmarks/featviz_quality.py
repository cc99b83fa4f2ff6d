"""Feature-visualization parameterizations on the same channels: pixel vs FFT, decorrelation, transforms.

Five variants, each through ``jaxinterp.report.visualizations.visualize_layers`` into its own folder (same seed, steps and
Adam learning rate; the sigmoid is always on):

* ``pixel``                — pixel basis, no decorrelation, no transforms (naive gradient ascent)
* ``pixel+tf``             — pixel basis, no decorrelation, standard transforms
* ``fft+tf``               — FFT basis (1/f), no decorrelation, standard transforms
* ``fft+decorr+tf``        — FFT basis, colour decorrelated with the agent's own frames, transforms (the default)
* ``fft+decorr``           — FFT basis, decorrelated, no transforms

Real frames of the agent playing (``jaxinterp.rl.export.agent_frames``) give the colour statistics
(``param.fit_color_stats``) and each channel's 99th / 99.9th percentile on real play. The table reports, per
variant: the mean over channels of the channel mean reached (measured on the final, untransformed image), the
fraction of channels beating the real-frame p99 / p99.9, and image statistics that expose collapse: mean pixel,
pixel std, fraction of saturated values (> 0.98 or < 0.02) and the high-frequency energy ratio (share of the
grey image's non-DC spectral energy above 1/4 cycle per pixel; noise is ~0.8, smooth images near 0). A row for the
real frames gives the reference. ``comparison.png`` puts the channels side by side: the real frame that drives
each channel hardest on top, then one row per variant.

Run:  uv run python benchmarks/featviz_quality.py --checkpoint runs/heist-impala \\
          --layer conv_seqs.2.res_block1 --channels 0-7 --steps 256 --out /tmp/featviz_quality
``--checkpoint`` takes a training run directory (its latest checkpoint, via
``jaxinterp.rl.train.load_run_agent``) or any file ``jaxinterp.load_agent`` reads.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

VARIANTS = {
    "pixel": {"basis": "pixel", "decorrelate": False, "transforms": False},
    "pixel+tf": {"basis": "pixel", "decorrelate": False, "transforms": True},
    "fft+tf": {"basis": "fft", "decorrelate": False, "transforms": True},
    "fft+decorr+tf": {"basis": "fft", "decorrelate": True, "transforms": True},
    "fft+decorr": {"basis": "fft", "decorrelate": True, "transforms": False},
}
HIGH_FREQ = 0.25
"""Cycles per pixel above which spectral energy counts as high-frequency (Nyquist is 0.5)."""
SATURATED = (0.02, 0.98)


def load(checkpoint: str):
    """(agent, description) from a training run directory or a weights file."""
    path = Path(checkpoint)
    if path.is_dir() and (path / "config.json").exists():
        from jaxinterp.weights.training_run import load_run_agent

        agent, meta = load_run_agent(path)
        return (
            agent,
            f"run {path}, latest checkpoint: iteration {meta['iteration']}, {meta['frames']:,} frames",
        )
    import jaxinterp

    return jaxinterp.load_agent(path), f"weights {path}"


def image_stats(images: np.ndarray) -> dict[str, float]:
    """Collapse detectors over float images (N, H, W, 3) in [0, 1]."""
    images = np.asarray(images, np.float64)
    grey = images.mean(axis=-1)
    grey = grey - grey.mean(axis=(1, 2), keepdims=True)
    power = np.abs(np.fft.fft2(grey)) ** 2
    h, w = grey.shape[1:]
    f = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.fftfreq(w)[None, :] ** 2)
    total = power.sum(axis=(1, 2))
    high = power[:, f > HIGH_FREQ].sum(axis=1)
    ratio = np.where(total > 0, high / np.maximum(total, 1e-30), 0.0)
    return {
        "mean": float(images.mean()),
        "std": float(images.std(axis=(1, 2)).mean()),
        "saturated": float(np.mean((images < SATURATED[0]) | (images > SATURATED[1]))),
        "high_freq": float(ratio.mean()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="runs/heist-impala", help="run directory or weights file")
    p.add_argument("--layer", default="conv_seqs.2.res_block1")
    p.add_argument("--channels", default="0-7")
    p.add_argument("--steps", type=int, default=256)
    p.add_argument(
        "--frames", type=int, default=512, help="real frames for percentiles and colour statistics"
    )
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--out", default="/tmp/featviz_quality")
    args = p.parse_args()

    wall = time.perf_counter()
    from jaxinterp import render as report_images
    from jaxinterp.featviz import objectives as obj
    from jaxinterp.featviz import param as param_lib
    from jaxinterp.featviz import transforms as tf
    from jaxinterp.featviz.real_values import real_frame_values
    from jaxinterp.models.agent import parse_channels
    from jaxinterp.report.visualizations import FeatvizSettings, visualize_layers
    from jaxinterp.rl.export import agent_frames

    agent, what = load(args.checkpoint)
    n = agent.layer_shapes[agent.check_layers([args.layer])[0]][-1]
    channels = parse_channels(args.channels, n, f"layer {args.layer!r}")
    t = time.perf_counter()
    frames = agent_frames(agent, args.frames, seed=args.seed)
    stats = param_lib.fit_color_stats(frames)
    print(f"# {agent!r}; {what}")
    print(
        f"# {len(frames)} real frames ({time.perf_counter() - t:.0f} s); colour mean {np.round(stats.mean, 3)}"
    )
    print(
        f"# layer {args.layer}, channels {args.channels}, {args.steps} steps, Adam lr {args.lr}, seed {args.seed}"
    )

    out = Path(args.out)
    rows, finals = {}, {}
    for name in args.variants.split(","):
        v = VARIANTS[name]
        t = time.perf_counter()
        settings = FeatvizSettings(
            steps=args.steps,
            lr=args.lr,
            basis=v["basis"],
            decorrelate=v["decorrelate"],
            color_matrix=stats.matrix,
            transforms=tf.standard_transforms() if v["transforms"] else None,
            seed=args.seed,
        )
        summary = visualize_layers(
            agent,
            [args.layer],
            channels,
            settings,
            out_dir=out / name,
            real_frames=frames,
            resume=False,
            progress=False,
        )
        s = summary["layers"][args.layer]
        with np.load(Path(s["folder"]) / "images.npz") as z:
            final = z["images"][-1][:, 0]  # (C, 64, 64, 3), facet 0
        finals[name] = final
        rows[name] = {
            "value": s["mean_value"],
            "p99": s["beat_p99"],
            "p999": s["beat_p999"],
            "seconds": time.perf_counter() - t,
            "values": s["values"],
        } | image_stats(final)
        print(
            f"# {name}: {rows[name]['seconds']:.0f} s, values {np.round(s['values'], 2).tolist()}", flush=True
        )

    # The real frame that drives each channel hardest, for the comparison sheet.
    real = real_frame_values(agent, obj.channel(args.layer), channels, frames)  # (C, N)
    top = frames[real.argmax(axis=1)].astype(np.float32) / 255.0
    real_row = image_stats(frames[:256].astype(np.float32) / 255.0)
    pct = np.percentile(real, [99.0, 99.9], axis=1)

    print(
        "\n| variant | mean channel value | beats real p99 | beats real p99.9 | mean pixel | pixel std "
        "| saturated (<0.02 or >0.98) | high-freq energy | seconds |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| real frames (reference; real max {real.max(axis=1).mean():.3g}, p99 {pct[0].mean():.3g}, "
        f"p99.9 {pct[1].mean():.3g}) | – | – | – | {real_row['mean']:.3f} | {real_row['std']:.3f} "
        f"| {real_row['saturated']:.1%} | {real_row['high_freq']:.3f} | – |"
    )
    for name, r in rows.items():
        print(
            f"| {name} | {r['value']:.3g} | {r['p99']:.0%} | {r['p999']:.0%} | {r['mean']:.3f} | {r['std']:.3f} "
            f"| {r['saturated']:.1%} | {r['high_freq']:.3f} | {r['seconds']:.0f} |"
        )

    cells, labels = [top], [f"real c{c}: {v:.2f}" for c, v in zip(channels, real.max(axis=1), strict=True)]
    for name, final in finals.items():
        cells.append(final)
        labels += [f"{name} c{c}: {v:.2f}" for c, v in zip(channels, rows[name]["values"], strict=True)]
    path = report_images.write_contact_sheet(
        out / "comparison.png",
        np.concatenate(cells),
        labels,
        columns=len(channels),
        scale=3,
        title=f"{args.layer}: top row the real frame with the highest channel mean, then "
        + ", ".join(finals),
    )
    print(f"\n# sheets: {out}/<variant>/{report_images.file_stem(args.layer)}/sheet.png, comparison: {path}")
    print(f"# wall time {time.perf_counter() - wall:.0f} s")


if __name__ == "__main__":
    main()
