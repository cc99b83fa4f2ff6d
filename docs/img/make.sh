#!/usr/bin/env bash
# Remakes the pictures of docs/img/ on the shipped agent (weights/heist-impala) with the commands the docs quote, so
# that shipping a new agent re-draws them in one go. The SAE tracking strips (sae_track_*.png) come from an SAE
# trained on the agent (docs/sae.md says how) and are not remade here.
# Usage: bash docs/img/make.sh [WORK_DIR]   (the CLI's outputs stay in WORK_DIR, default a new temporary folder)
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${1:-$(mktemp -d)}
img=docs/img
layer=conv_seqs.2.res_block1
stem=conv_seqs_2_res_block1  # the layer in file names
jx() { uv run jaxinterp "$@"; }
one() { # the single file matching a glob, or a clear failure
    local found=("$@")
    [[ ${#found[@]} == 1 && -f ${found[0]} ]] || { echo "expected one file, got: ${found[*]}" >&2; exit 1; }
    echo "${found[0]}"
}

# Feature visualization: the centre-neuron sheet of four last-stage channels (docs/featviz.md, README).
jx visualize --layer $layer --channels 7,16,25,30 --objective neuron --jitter 8,4 --steps 512 --out "$work/vis"
cp "$work/vis/$stem/sheet.png" $img/featviz_neuron.png

# Dataset examples, object scores and attribution on 4,096 frames of the agent's play (docs/examples.md, README).
jx rollout --frames 4096 --seed 1 --out "$work/data"
jx examples --layer $layer --dataset "$work/data" --channels 7,16 --k 8 --diversity 0.5 --spatial --out "$work/ex"
cp "$work/ex/${stem}_0016.png" $img/examples.png
cp "$work/ex/${stem}_spatial.png" $img/spatial.png
jx objects --layer $layer --dataset "$work/data" --channels 7,16 --out "$work/obj"
cp "$work/obj/objects.png" $img/objects.png
cp "$work/obj/object_maps.png" $img/object_maps.png
jx attribution --dataset "$work/data" --frames 700,1900,3300 --target value --method ig --out "$work/att"
cp "$(one "$work"/att/ig_value*.png)" $img/attribution.png

# Interventions: the paths with channel 7 of the last stage zeroed, beside the clean ones (docs/interventions.md).
jx intervene --edit "$layer:7=0" --levels 64 --out "$work/edit"
cp "$(one "$work"/edit/trajectories_*.png)" $img/intervention_paths.png
echo "docs/img remade; the CLI's outputs are in $work"
