#!/usr/bin/env bash
# The GPU bundle's run.sh (scripts/gpu-bundle.sh copies it there): measures this machine's GPU
# in one run and writes every output into OUT: summary.txt (one line per step: exit code and
# seconds), each step's log, the runs' folders and the tuner's cache.
# Usage: run.sh OUT   (env: BACKEND=vulkan|auto|..., TORCH=python3, EPOCHS=1,
#                      LIMIT_TRAIN=N: train on N images only, for a quick run on a slow adapter,
#                      FAST_SEEDS=3: the fast preset's full recipe for seeds 0..N-1, 0: skip)
set -u
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: run.sh OUT}
mkdir -p "$out"
out=$(cd "$out" && pwd)
bin=$here/wgpu-fmnist
data=$here/data
backend=${BACKEND:-auto}
epochs=${EPOCHS:-1}
torch=${TORCH:-python3}
fast_seeds=${FAST_SEEDS:-3}
limit=()
# A tenth of the limited set held out for validation (the default 5000 would leave none).
[ -n "${LIMIT_TRAIN:-}" ] && limit=(--limit-train "$LIMIT_TRAIN" --val $((LIMIT_TRAIN / 10)))
export WGPU_FMNIST_CACHE_DIR=$out/cache
summary=$out/summary.txt
: >"$summary"

# step NAME LIMIT_SECONDS COMMAND...: runs it with its output in OUT/NAME.log.
step() {
    local name=$1 limit=$2
    shift 2
    local t0 rc
    t0=$EPOCHREALTIME
    echo "== $name: $*" >&2
    timeout --kill-after=10 "$limit" "$@" >"$out/$name.log" 2>&1
    rc=$?
    local secs
    secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { print b - a }')
    [ "$rc" -eq 124 ] && echo "   (stopped after ${limit} s)" >&2
    printf '%-22s rc %-3s %8.1f s\n' "$name" "$rc" "$secs" | tee -a "$summary" >&2
    return 0
}

{
    echo "date: $(date -u +%FT%TZ)"
    echo "host: $(uname -srm)"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
} >"$out/machine.txt" 2>&1

step devices 60 "$bin" devices --backend "$backend"
step devices-json 60 "$bin" devices --backend "$backend" --json
if "$bin" check --help >/dev/null 2>&1; then
    step check 300 "$bin" check --backend "$backend"
fi
for model in mlp cnn1 cnn2 regcnn vgg fast; do
    step "bench-$model" 180 "$bin" bench --backend "$backend" --model "$model" --kernels
done
for model in regcnn vgg; do
    step "train-$model" 600 "$bin" train --backend "$backend" --model "$model" --epochs "$epochs" \
        --data "$data" --out "$out/runs" --name "$model" --json "${limit[@]}"
done
# The fast preset's whole recipe (its 15 epochs): test accuracy and time to 90..94 %.
for ((seed = 0; seed < fast_seeds; seed++)); do
    step "train-fast-$seed" 600 "$bin" train --backend "$backend" --model fast --seed "$seed" \
        --data "$data" --out "$out/runs" --name "fast-$seed" --json "${limit[@]}"
done
if "$torch" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    for model in regcnn vgg; do
        step "torch-$model" 600 "$torch" "$here/tools/torch_reference.py" --model "$model" \
            --epochs "$epochs" --seeds 1 --init ours --device cuda --binary "$bin" \
            --data "$data" -- --data "$data" --backend "$backend"
    done
    if [ "$fast_seeds" -gt 0 ]; then
        step torch-fast 600 "$torch" "$here/tools/torch_reference.py" --model fast \
            --epochs 15 --seeds 1 --device cuda --binary "$bin" \
            --data "$data" -- --data "$data" --backend "$backend"
    fi
else
    echo "torch with CUDA not found ($torch): PyTorch's side skipped" | tee -a "$summary" >&2
fi
echo "outputs in $out" >&2
