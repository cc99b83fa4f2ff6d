"""Feature visualization: channel-steps per second, jaxinterp against lucent (torch-lucent), same job, CPU or GPU.

The job, identical on both sides: the impala network with random weights (tests/torch_models.py; jaxinterp loads
the same torch state dict), every channel of a layer, 64×64 images in an FFT basis with ImageNet colour
decorrelation and a sigmoid, the same transform list (pad 16 constant grey, jitter 16, scale
{0.95, 0.975, 1.025, 1.05}, rotate ±5° in whole degrees, jitter 8), Adam lr 0.05, objective = the channel's mean.
lucent runs in its fastest honest configuration: weights frozen (``requires_grad_(False)``), eval mode, no
ImageNet normalization (``preprocess=False``; the network takes [0, 1] images), ``fixed_image_size=64``, and
the faster of 1 and 2 torch threads, picked per network and kind of run by a short calibration run
(``--torch-threads``, ``--calibrate``): on a CPU shared with other jobs, torch's 2 OpenMP threads can run
many times slower than one when the other core is busy. It is timed both batched over channels (one
``render_vis`` whose image batch holds one image per channel, objective the sum of ``channel(layer, c,
batch=c)``) and one channel at a time (C ``render_vis`` calls). lucent always runs its model's whole forward,
so it is timed on the whole network and, for layers before the last stage, on the network cut after the layer
(what a user could do by hand); the main table compares with the faster of the two.

What is timed:
* jaxinterp: the second ``visualize(key, channels)`` call of one ``make_visualize`` (the first compiles; its
  extra time is reported as compile time). The whole call is counted: image init, the steps, the final
  measurement and the transfer of images to numpy. ``scan=True`` (default) and ``scan=False`` (host loop).
* lucent: the optimizer steps only. An Adam subclass timestamps every step; the first ``--warmup`` steps of each
  ``render_vis`` call are dropped, and so is each call's setup (hooks, parameter creation, image export).
* 2 host devices (``--xla_force_host_platform_device_count=2``, which must be set before jax starts): a
  subprocess of this script times jaxinterp (scan) on 1 device and on 2 devices of that same process. To compare
  with lucent side by side the way ``jaxinterp visualize`` runs on a 2-core CPU (one device per core), set that
  flag in ``XLA_FLAGS`` for the whole script and pass ``--no-devices``: jaxinterp then shards over both.
* ``--all-conv``: every channel of every convolution of the network (400 for impala) in one jaxinterp call,
  one objective family over all of them (index -> (layer, channel)), so one compile serves them all; each job runs
  the network up to the last stage, more work than a per-layer run, never less.
On a GPU (when JAX's default backend is one and torch sees CUDA) lucent's model runs on ``cuda:0`` (lucent puts its
images there itself), its clock synchronizes CUDA at the first timed step and after the last, and torch thread
counts do not matter (pass ``--torch-threads 1``). Carry the three wheels above to such a machine (it has torch
and torchvision): ``python3 benchmarks/bench_featviz.py --steps 512 --torch-threads 1 --no-devices --all-conv``.
Measurements alternate between the frameworks (``--repeats`` rounds, best of each kept) so machine noise hits all
of them; compare ratios, which this script computes within one run.

Install lucent into the project environment for benchmarking only (never a runtime dependency). torch is already
installed from the local CPU wheel: always pass --no-deps, so that uv never resolves torch from the index:

    uv pip install --no-deps torch-lucent==0.1.8 "kornia<=0.4.1" decorator

lucent 0.1.8 imports ``torchvision`` (it needs only ``transforms.Normalize``, unused here since
``preprocess=False``, and star-imports ``torchvision.models``) and ``IPython.display`` (for notebook display).
No torchvision build matches this torch, and IPython needs further packages (traitlets, ...), so when the real
modules cannot be imported this script registers small stand-ins for them in ``sys.modules`` at run time; it
writes no files.

Run:  uv run python benchmarks/bench_featviz.py --steps 128
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import importlib.util
import json
import operator
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("conv_seqs.0.res_block1", "conv_seqs.2.res_block1")
SCALES = (0.95, 0.975, 1.025, 1.05)
ANGLES = tuple(range(-5, 6))
PAD, JITTERS, LR, SIZE = 16, (16, 8), 0.05, 64


# --- jaxinterp -------------------------------------------------------------------------------------------------
def jax_transforms():
    from jaxinterp.featviz import transforms as tf

    return tf.Transform(
        pad=PAD,
        pad_mode="constant",
        pad_value=0.5,
        jitters=JITTERS,
        scales=SCALES,
        angles_deg=tuple(float(a) for a in ANGLES),
    )


def jax_visualizer(agent, layer: str, steps: int, *, scan: bool = True, devices=None):
    from jaxinterp.featviz import objectives as obj
    from jaxinterp.featviz import param as param_lib
    from jaxinterp.featviz.engine import VisualizeConfig, make_visualize

    config = VisualizeConfig(
        steps=steps,
        facets=1,
        lr=LR,
        param=param_lib.image(SIZE, basis="fft"),
        transforms=jax_transforms(),
        scan=scan,
        devices=tuple(devices) if devices is not None else None,
    )
    return make_visualize(agent, obj.channel(layer), config)


def time_jax(visualize, channels, seed: int) -> float:
    t = time.perf_counter()
    r = visualize(seed, channels)
    np.asarray(r.images)  # already numpy; makes the point that transfer is counted
    return time.perf_counter() - t


def make_agent(model):
    import jaxinterp

    return jaxinterp.agent_from_state_dict({k: v.detach().numpy() for k, v in model.state_dict().items()})


def conv_layers(agent) -> list[str]:
    """The network's convolutions (each stage's first conv and its residual blocks' two), in forward order."""
    return [n for n in agent.conv_layer_names if n.rsplit(".", 1)[-1] in ("conv", "conv0", "conv1")]


def every_conv_channel(agent):
    """One objective family over every channel of every convolution: index -> the mean of that channel."""
    import jax
    import jax.numpy as jnp

    from jaxinterp.featviz.objectives import Objective

    layers = tuple(conv_layers(agent))
    total = sum(agent.layer_shapes[n][-1] for n in layers)

    def fn(acts, images, index):
        means = jnp.concatenate([acts[n].mean(axis=(1, 2)) for n in layers], axis=-1)
        return means @ jax.nn.one_hot(index, total, dtype=means.dtype)

    return Objective(fn, layers, "channel(every conv layer, {i})", lambda _agent: total)


def all_conv_run(agent, steps: int, repeats: int) -> dict:
    """Seconds for every conv channel of the network x ``steps`` in one call (best of ``repeats``), and compile."""
    from jaxinterp.featviz import param as param_lib
    from jaxinterp.featviz.engine import VisualizeConfig, make_visualize

    config = VisualizeConfig(
        steps=steps, facets=1, lr=LR, param=param_lib.image(SIZE, basis="fft"), transforms=jax_transforms()
    )
    objective = every_conv_channel(agent)
    visualize = make_visualize(agent, objective, config)
    channels = list(range(objective.num_indices(agent)))
    first = time_jax(visualize, channels, 0)
    best = min(time_jax(visualize, channels, 1 + r) for r in range(repeats))
    return {
        "layers": len(objective.layers),
        "channels": len(channels),
        "seconds": best,
        "compile": first - best,
    }


# --- lucent ----------------------------------------------------------------------------------------------------
def install_lucent_stand_ins() -> list[str]:
    """Register stand-ins for the parts of torchvision and IPython that lucent imports, if the real ones fail."""
    import torch

    stood_in = []
    try:
        if importlib.util.find_spec("torchvision") is None:
            raise ImportError
        import torchvision.models
        import torchvision.transforms  # noqa: F401
    except (ImportError, OSError, RuntimeError, AttributeError):

        class Normalize:
            """torchvision.transforms.Normalize on one (C, H, W) tensor: (t - mean) / std per channel."""

            def __init__(self, mean, std):
                self.mean = torch.as_tensor(mean, dtype=torch.float32)[:, None, None]
                self.std = torch.as_tensor(std, dtype=torch.float32)[:, None, None]

            def __call__(self, t):
                return (t - self.mean.to(t)) / self.std.to(t)

        tv = types.ModuleType("torchvision")
        tv.__path__ = []
        transforms = types.ModuleType("torchvision.transforms")
        transforms.Normalize = Normalize
        models = types.ModuleType("torchvision.models")
        models.__all__ = []
        tv.transforms, tv.models = transforms, models
        sys.modules.update(
            {"torchvision": tv, "torchvision.transforms": transforms, "torchvision.models": models}
        )
        stood_in.append("torchvision")
    try:
        import IPython.display  # noqa: F401
    except (ImportError, OSError, RuntimeError, AttributeError):
        ipy = types.ModuleType("IPython")
        ipy.__path__ = []
        display = types.ModuleType("IPython.display")

        def _no_display(*_a, **_k):
            raise RuntimeError("IPython stand-in: no notebook display in this benchmark")

        display.display = display.HTML = _no_display
        ipy.display = display
        sys.modules.update({"IPython": ipy, "IPython.display": display})
        stood_in.append("IPython.display")
    return stood_in


def lucent_model(torch_model, stages: int | None = None):
    """lucent's view of the impala net: NCHW float images in [0, 1] in, submodules called directly.

    Module names match lucent's hook names (``conv_seqs_0_res_block1``). ``stages``: run only the first
    ``stages`` conv sequences (the network cut after a stage's last layer), else the whole network.
    """
    import torch
    from torch import nn
    from torch.nn import functional as F

    class LucentImpala(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv_seqs = torch_model.conv_seqs
            self.hidden_fc, self.logits_fc, self.value_fc = (
                torch_model.hidden_fc,
                torch_model.logits_fc,
                torch_model.value_fc,
            )

        def forward(self, x):
            for seq in self.conv_seqs[: stages if stages is not None else len(self.conv_seqs)]:
                x = seq(x)
            if stages is not None and stages < len(self.conv_seqs):
                return x
            x = F.relu(self.hidden_fc(F.relu(torch.flatten(x, 1))))
            return self.logits_fc(x), self.value_fc(x)[:, 0]

    return LucentImpala().eval().requires_grad_(False)


def lucent_transforms():
    from lucent.optvis import transform

    return [
        transform.pad(PAD, mode="constant", constant_value=0.5),
        transform.jitter(JITTERS[0]),
        transform.random_scale(list(SCALES)),
        transform.random_rotate(list(ANGLES)),
        transform.jitter(JITTERS[1]),
    ]


class StepTimes:
    """An Adam factory for render_vis whose optimizer appends a timestamp after every step.

    On CUDA (``sync``) the step before the first timed one waits for the GPU, and ``stop`` stamps the end once it
    has drained, so queued kernels are neither missed nor counted twice.
    """

    def __init__(self, warmup: int, sync=None):
        self.times: list[float] = []
        self.warmup, self.sync = warmup, sync

    def __call__(self, params):
        import torch

        times, warmup, sync = self.times, self.warmup, self.sync

        class TimedAdam(torch.optim.Adam):
            def step(self, closure=None):
                out = super().step(closure)
                if sync is not None and len(times) == warmup - 1:
                    sync()
                times.append(time.perf_counter())
                return out

        return TimedAdam(params, lr=LR)

    def stop(self) -> None:
        if self.sync is not None:
            self.sync()
            self.times[-1] = time.perf_counter()

    def rate(self) -> tuple[int, float]:
        """(steps after warm-up, their seconds)."""
        t, w = self.times, self.warmup
        return len(t) - w, t[-1] - t[w - 1]


def lucent_run(model, name: str, channels: list[int], steps: int, warmup: int, batched: bool) -> float:
    """Channel-steps/s of lucent's optimizer steps, all channels in one batch or one render_vis per channel."""
    import torch
    from lucent.optvis import objectives, param, render

    sync = torch.cuda.synchronize if next(model.parameters()).is_cuda else None

    def run_vis(objective, batch, clock):
        render.render_vis(
            model,
            objective,
            lambda: param.image(SIZE, fft=True, decorrelate=True, batch=batch),
            optimizer=clock,
            transforms=lucent_transforms(),
            thresholds=(steps,),
            preprocess=False,
            progress=False,
            show_image=False,
            fixed_image_size=SIZE,
        )
        clock.stop()

    if batched:
        clock = StepTimes(warmup, sync)
        objective = functools.reduce(
            operator.add, [objectives.channel(name, c, batch=i) for i, c in enumerate(channels)]
        )
        run_vis(objective, len(channels), clock)
        n, seconds = clock.rate()
        return len(channels) * n / seconds
    total_steps, total_seconds = 0, 0.0
    for c in channels:
        clock = StepTimes(warmup, sync)
        run_vis(objectives.channel(name, c), 1, clock)
        n, seconds = clock.rate()
        total_steps, total_seconds = total_steps + n, total_seconds + seconds
    return total_steps / total_seconds


# --- the 2-host-device subprocess ------------------------------------------------------------------------------
def devices_main(args) -> None:
    import jax
    import torch  # noqa: F401

    sys.path.insert(0, str(ROOT / "tests"))
    from torch_models import random_model

    agent = make_agent(random_model("impala", seed=0, num_actions=15))
    out = {"devices": len(jax.devices()), "layers": {}}
    for layer in args.layers.split(","):
        channels = list(range(agent.layer_shapes[layer][-1]))
        vis = {n: jax_visualizer(agent, layer, args.steps, devices=jax.devices()[:n]) for n in (1, 2)}
        first = {n: time_jax(v, channels, 0) for n, v in vis.items()}
        best = {n: float("inf") for n in vis}
        for r in range(args.repeats):
            for n, v in vis.items():
                best[n] = min(best[n], time_jax(v, channels, 1 + r))
        out["layers"][layer] = {f"dev{n}": len(channels) * args.steps / best[n] for n in vis} | {
            f"compile_dev{n}": first[n] - best[n] for n in vis
        }
    print("RESULT " + json.dumps(out))


def run_devices_subprocess(args) -> dict | None:
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
    cmd = [
        sys.executable,
        __file__,
        "--_devices",
        "--steps",
        str(args.steps),
        "--repeats",
        str(args.repeats),
        "--layers",
        args.layers,
    ]
    proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    print(f"2-device subprocess failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}", file=sys.stderr)
    return None


# --- main ------------------------------------------------------------------------------------------------------
def check_same_network(model, agent, layer: str) -> float:
    """Relative max |difference| of the layer, lucent's wrapper (NCHW) vs jaxinterp, on random [0, 1] images."""
    import torch

    images = np.random.default_rng(0).random((4, SIZE, SIZE, 3), dtype=np.float32)
    captured = {}
    module = functools.reduce(getattr, layer.split("."), model)
    hook = module.register_forward_hook(lambda _m, _i, out: captured.setdefault("x", out))
    device = next(model.parameters()).device
    with torch.no_grad():
        model(torch.as_tensor(images, device=device).permute(0, 3, 1, 2))
    hook.remove()
    theirs = captured["x"].permute(0, 2, 3, 1).cpu().numpy()
    ours = np.asarray(agent.forward(agent.params, images)[layer])
    return float(np.abs(theirs - ours).max() / max(1e-6, np.abs(theirs).max()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--steps", type=int, default=128, help="steps of each batched run (jaxinterp, lucent batched)"
    )
    p.add_argument("--single-steps", type=int, default=48, help="steps of each one-channel lucent run")
    p.add_argument(
        "--torch-threads",
        default="1,2",
        help="torch thread counts to try for lucent; the fastest is timed",
    )
    p.add_argument("--calibrate", type=int, default=8, help="timed steps of each lucent thread-count trial")
    p.add_argument(
        "--warmup", type=int, default=4, help="lucent steps per render_vis call left out of the timing"
    )
    p.add_argument("--repeats", type=int, default=2, help="alternating rounds; the best of each is kept")
    p.add_argument("--layers", default=",".join(LAYERS))
    p.add_argument("--no-devices", action="store_true", help="skip the 2-host-device subprocess")
    p.add_argument(
        "--all-conv", action="store_true", help="also time every conv channel of the network in one call"
    )
    p.add_argument("--_devices", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if min(args.steps, args.single_steps) <= args.warmup:
        p.error(
            f"--steps and --single-steps must exceed --warmup ({args.warmup}): the warm-up steps are untimed"
        )
    if args._devices:
        devices_main(args)
        return

    wall = time.perf_counter()
    import jax
    import torch

    stood_in = install_lucent_stand_ins()
    from lucent.modelzoo.util import get_model_layers

    sys.path.insert(0, str(ROOT / "tests"))
    from torch_models import random_model

    default_threads = torch.get_num_threads()
    torch.manual_seed(0)
    np.random.seed(0)
    model = random_model("impala", seed=0, num_actions=15).requires_grad_(False)
    agent = make_agent(model)
    gpu = jax.default_backend() == "gpu" and torch.cuda.is_available()
    if gpu:
        model = model.cuda()
    full = lucent_model(model)
    known = set(get_model_layers(full))
    print(
        f"# jax {jax.__version__} ({len(jax.devices())} {jax.devices()[0].platform} device), torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads), torch-lucent "
        f"{importlib.metadata.version('torch-lucent')} on {'cuda' if gpu else 'cpu'}"
        + (f" ({torch.cuda.get_device_name()})" if gpu else "")
        + f"; stand-ins: {', '.join(stood_in) or 'none'}"
    )
    print(
        f"# XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; steps {args.steps} (lucent one-at-a-time "
        f"{args.single_steps}, first {args.warmup} of each call untimed); repeats {args.repeats}; "
        f"load average at start {os.getloadavg()[0]:.2f}"
    )

    every = all_conv_run(agent, args.steps, args.repeats) if args.all_conv else None
    if every is not None:
        print(f"# every conv channel: {every}", flush=True)
    threads = [int(t) for t in args.torch_threads.split(",")]
    rows = {}
    for layer in args.layers.split(","):
        name = layer.replace(".", "_")
        if name not in known:
            raise SystemExit(f"lucent has no layer {name!r}; it has {sorted(known)}")
        err = check_same_network(full, agent, layer)
        # On CUDA both sides run f32 convolutions in TF32 by default (torch's cudnn.allow_tf32, XLA's default
        # precision), ~1e-3 relative; on CPU they agree to float32 rounding.
        if err > (1e-2 if gpu else 1e-4):
            raise SystemExit(f"torch and jaxinterp disagree on {layer}: relative max error {err:.2e}")
        stage = int(layer.split(".")[1])
        models = {"whole": full}
        if stage + 1 < len(model.conv_seqs):  # in the last stage, cutting drops only the small dense head
            models["cut"] = lucent_model(model, stages=stage + 1)
        channels = list(range(agent.layer_shapes[layer][-1]))
        C, S, S1 = len(channels), args.steps, args.single_steps

        vis = {"scan": jax_visualizer(agent, layer, S), "loop": jax_visualizer(agent, layer, S, scan=False)}
        first = {k: time_jax(v, channels, 0) for k, v in vis.items()}
        # Calibration (and torch's warm-up): a short run of each kind per network and thread count picks
        # lucent's thread count, since on a shared CPU 2 OpenMP threads can be many times slower than 1.
        calib = {}
        for tag, m in models.items():
            for t in threads:
                torch.set_num_threads(t)
                for kind, chans in (("batched", channels), ("single", channels[:2])):
                    steps = args.warmup + args.calibrate
                    calib[tag, kind, t] = lucent_run(
                        m, name, chans, steps, args.warmup, batched=kind == "batched"
                    )
        chosen = {
            (tag, kind): max(threads, key=lambda t, tag=tag, kind=kind: calib[tag, kind, t])
            for tag in models
            for kind in ("batched", "single")
        }

        best: dict = {"lucent": {}, "calib": calib, "chosen": chosen}
        seconds = {}
        for r in range(args.repeats):
            for k, v in vis.items():
                t = time_jax(v, channels, 1 + r)
                seconds[k] = min(seconds.get(k, float("inf")), t)
                best[k] = max(best.get(k, 0.0), C * S / t)
            for tag, m in models.items():
                for kind, steps in (("batched", S), ("single", S1)):
                    torch.set_num_threads(chosen[tag, kind])
                    rate = lucent_run(m, name, channels, steps, args.warmup, batched=kind == "batched")
                    best["lucent"][tag, kind] = max(best["lucent"].get((tag, kind), 0.0), rate)
        torch.set_num_threads(default_threads)
        best |= {f"compile_{k}": first[k] - seconds[k] for k in vis}
        best["channels"] = C
        rows[layer] = best
        print(
            f"# {layer}: jaxinterp scan {best['scan']:.4g}, loop {best['loop']:.4g}; lucent "
            + ", ".join(f"{tag} {kind} {v:.4g}" for (tag, kind), v in best["lucent"].items()),
            flush=True,
        )

    devices = None if args.no_devices else run_devices_subprocess(args)

    print(
        "\nchannel-steps/s (higher is better); lucent columns: its fastest configuration on this run "
        "(see the next table)"
    )
    print(
        "\n| layer | channels | jaxinterp (scan) | jaxinterp (loop) | lucent batched | lucent one-at-a-time "
        "| scan ÷ lucent batched | scan ÷ lucent one-at-a-time | loop ÷ lucent batched |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for layer, b in rows.items():
        lb = max(v for (_, kind), v in b["lucent"].items() if kind == "batched")
        ls = max(v for (_, kind), v in b["lucent"].items() if kind == "single")
        print(
            f"| {layer} | {b['channels']} | {b['scan']:.0f} | {b['loop']:.0f} | {lb:.0f} | {ls:.0f} "
            f"| {b['scan'] / lb:.2f}× | {b['scan'] / ls:.2f}× | {b['loop'] / lb:.2f}× |"
        )
    print(
        "\nlucent by configuration: timed rate (torch threads used); then the short calibration runs per thread "
        "count that chose them"
    )
    print("\n| layer | lucent network | batched | one-at-a-time | calibration: batched | one-at-a-time |")
    print("|---|---|---|---|---|---|")
    for layer, b in rows.items():
        for tag in dict.fromkeys(tag for tag, _ in b["lucent"]):
            cal = {
                kind: ", ".join(
                    f"{t}t {v:.0f}" for (g, k, t), v in b["calib"].items() if g == tag and k == kind
                )
                for kind in ("batched", "single")
            }
            print(
                f"| {layer} | {tag} | {b['lucent'][tag, 'batched']:.0f} ({b['chosen'][tag, 'batched']}t) "
                f"| {b['lucent'][tag, 'single']:.0f} ({b['chosen'][tag, 'single']}t) "
                f"| {cal['batched']} | {cal['single']} |"
            )
    print("\n| layer | jaxinterp compile s (scan) | (loop) |\n|---|---|---|")
    for layer, b in rows.items():
        print(f"| {layer} | {b['compile_scan']:.1f} | {b['compile_loop']:.1f} |")
    if devices is not None:
        print(
            "\n2 host devices (a subprocess with --xla_force_host_platform_device_count=2; its own 1-device run "
            "is the baseline), jaxinterp scan, channel-steps/s"
        )
        print("\n| layer | 1 device | 2 devices | 2 ÷ 1 | compile s (1 / 2 devices) |\n|---|---|---|---|---|")
        for layer, d in devices["layers"].items():
            print(
                f"| {layer} | {d['dev1']:.0f} | {d['dev2']:.0f} | {d['dev2'] / d['dev1']:.2f}× "
                f"| {d['compile_dev1']:.1f} / {d['compile_dev2']:.1f} |"
            )
    if every is not None:
        print(
            f"\nevery conv channel of the network in one call: {every['channels']} channels of "
            f"{every['layers']} layers x {args.steps} steps in {every['seconds']:.2f} s "
            f"({every['channels'] * args.steps / every['seconds']:.0f} channel-steps/s; compile "
            f"{every['compile']:.1f} s more)"
        )
    print(f"\n# wall time {time.perf_counter() - wall:.0f} s; load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
