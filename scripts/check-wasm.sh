#!/usr/bin/env bash
# Builds the platform-neutral core of the library (model, kernels, step plans, trainer,
# checkpoints; see src/lib.rs) for wasm32-unknown-unknown with wgpu's WebGPU backend: the
# browser build's foundation (issue 28), kept compiling by CI.
#
# rustup's toolchain has no wasm32 standard library offline; Debian's rustc-web, cargo-web
# and rust-web-src (1.96) build one (-Zbuild-std, which needs RUSTC_BOOTSTRAP). The linker
# is the rust-lld rustup ships. Output: target/wasm/wasm32-unknown-unknown/release/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-system-deps.sh --with-wasm
lld="$(rustc --print sysroot)/lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld"
if [ ! -x "$lld" ]; then
    echo "error: $lld is missing (rustup's toolchain ships it)" >&2
    exit 1
fi
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$lld"
RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc /usr/bin/cargo build --locked --release --lib \
    -Zbuild-std=std,panic_abort --target wasm32-unknown-unknown --target-dir target/wasm
echo "wasm32 core built: target/wasm/wasm32-unknown-unknown/release/" >&2
