#!/usr/bin/env bash
# A stint of the default agent's training run (training/heist-impala) on a GPU machine that is lent for a few
# minutes, prepared so that those minutes go to training, not to setting up. Such a machine has JAX, flax, optax,
# orbax, safetensors, pillow, tqdm and matplotlib but no procgen, nor the libGL and glib that procgen's bundled Qt
# loads: first, here, fetch procgen's wheels (Python 3.12, manylinux x86_64, about 47 MB) into .whl/ and those two
# libraries' Debian packages into .gl/ (both git-ignored):
#   echo /.whl/ >> .git/info/exclude; mkdir -p .whl
#   p='--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
#      --platform manylinux2014_x86_64 --platform manylinux1_x86_64'
#   python3 -m pip download --no-deps --only-binary=:all: $p -d .whl procgen-mirror==0.10.7 gym3==0.3.3 cffi \
#     pycparser cloudpickle gym-notices
#   python3 -m pip wheel --no-deps -w .whl gym==0.26.2   # published as source only; pure Python
#   echo /.gl/ >> .git/info/exclude; mkdir -p .gl /tmp/amd64/partial
#   o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'; apt-get $o update
#   (cd .gl && apt-get $o download libgl1 libglx0 libglvnd0 libglib2.0-0)
# keep one checkpoint in the run's checkpoints/ (the working tree travels: 64 MiB in all), then run
#   bash training/gpu_sitting.sh [SECONDS] [RUN] [FRAMES]   (device `run`, carry [".whl", ".gl"], timeout_s 600)
# It resumes RUN (default training/heist-impala; its config is read from RUN/config.json) for SECONDS (default
# 480) or until FRAMES in total (default 100M), stops it with SIGTERM (the trainer checkpoints on exit) and packs
# the newest checkpoint, metrics and curve into $OUT/NAME.tar (NAME: RUN's folder name); unpack it over RUN here:
#   rm -r RUN/checkpoints/iter_*; tar -xf FILES_AT/NAME.tar -C RUN
# Without .whl/ (here, under `uv run`) it uses the installed packages, which is how it is checked on CPU.
set -euo pipefail
budget=${1:-480}
run=${2:-training/heist-impala}
frames=${3:-100000000}
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
if [ -d .gl ]; then  # unpacked beside the system, not over it, and found through LD_LIBRARY_PATH
  for f in .gl/*.deb; do dpkg -x "$f" /tmp/gl; done
  export LD_LIBRARY_PATH=/tmp/gl/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
export PYTHONUNBUFFERED=1
python3 -c "import jax; print('devices:', jax.devices())"
# The run's own config (a run resumes only with it; the compute settings are left to pick the GPU's own);
# checkpoints every 2 minutes so a cut-off call loses little.
read -r config seed < <(python3 -c 'import json, sys
meta = json.load(open(sys.argv[1]))
skip = ("microbatch_size", "devices")
print(",".join(f"{k}={json.dumps(v)}" for k, v in meta["ppo"].items() if k not in skip), meta["seed"])' \
  "$run/config.json")
timeout --signal=TERM --kill-after=120 "$budget" python3 -m jaxinterp.cli train-agent --frames "$frames" \
  --out "$run" --config "$config" --seed "$seed" --checkpoint-every 120 || true
latest=$(basename "$(ls -d "$run"/checkpoints/iter_* | tail -1)")
tar -cf "${OUT:?set OUT to the folder that comes back}/$(basename "$run").tar" -C "$run" \
  "checkpoints/$latest" metrics.jsonl learning_curve.png
echo "packed $latest"
tail -n 2 "$run/metrics.jsonl" | cut -c1-200
