#!/usr/bin/env bash
# Writes a self-contained folder that measures a GPU machine in one run, for machines with a
# GPU driver but no Rust toolchain or network:
#   DIR/wgpu-fmnist          the stripped release binary (Linux x86-64, built here)
#   DIR/data/*.gz            the four Fashion-MNIST files
#   DIR/tools/               tools/torch_reference.py and parity.py (PyTorch's side, if present)
#   DIR/run.sh OUT           devices, check, bench for every preset, regcnn and vgg for one
#                            epoch, fast's whole recipe, PyTorch on the same GPU; every
#                            output into OUT
# Usage: scripts/gpu-bundle.sh DIR [--data DATA_DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:?usage: scripts/gpu-bundle.sh DIR [--data DATA_DIR]}
data=/usr/share/datasets/fashion-mnist
if [ "${2:-}" = "--data" ]; then
    data=${3:?--data needs a folder}
fi
files=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)
for f in "${files[@]}"; do
    [ -f "$data/$f" ] || { echo "error: $data/$f is missing (apt-get install dataset-fashion-mnist, or --data DIR)" >&2; exit 1; }
done

(cd "$root" && cargo build --release --locked)
mkdir -p "$dir/data" "$dir/tools"
cp "${CARGO_TARGET_DIR:-$root/target}/release/wgpu-fmnist" "$dir/wgpu-fmnist.tmp"
strip "$dir/wgpu-fmnist.tmp" 2>/dev/null || true
mv "$dir/wgpu-fmnist.tmp" "$dir/wgpu-fmnist"
for f in "${files[@]}"; do cp "$data/$f" "$dir/data/$f"; done
cp "$root/tools/torch_reference.py" "$root/tools/parity.py" "$dir/tools/"
cp "$root/scripts/gpu-run.sh" "$dir/run.sh"
chmod +x "$dir/run.sh" "$dir/wgpu-fmnist"
size=$(du -sm "$dir" | cut -f1)
echo "wrote $dir (${size} MB): copy it to the GPU machine and run $dir/run.sh OUT"
if [ "$size" -gt 50 ]; then
    echo "error: $dir is ${size} MB, over the 50 MB the bundle promises" >&2
    exit 1
fi
