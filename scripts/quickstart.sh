#!/usr/bin/env bash
# Quick start on a fresh Debian/Ubuntu machine (GPU optional): installs what is missing
# (software Vulkan driver, the Fashion-MNIST package), builds, and trains the regularized CNN
# on the real data for one epoch. Extra arguments go to `train`, e.g. `--epochs 25`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-system-deps.sh
cargo build --release --locked
exec "${CARGO_TARGET_DIR:-target}/release/wgpu-fmnist" train --model regcnn --epochs 1 "$@"
