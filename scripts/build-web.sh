#!/usr/bin/env bash
# Builds the browser page into target/web/ (static files: open it through any static server,
# e.g. `python3 -m http.server -d target/web 8000`, then http://localhost:8000/).
#
#   target/web/index.html, app.js   the page (web/)
#   target/web/pkg/                 the wasm module and its JS glue (web/src/lib.rs)
#   target/web/data/                the four Fashion-MNIST files, copied when found (the
#                                   data package or ./data/fashion-mnist); without them the
#                                   page asks for the files
#
# rustup's toolchain has no wasm32 standard library offline: Debian's rustc-web, cargo-web
# and rust-web-src (1.96) build one (-Zbuild-std, which needs RUSTC_BOOTSTRAP); the linker
# is the rust-lld rustup ships. The JS glue comes from wasm-bindgen-cli, installed into
# ~/.cargo/bin at the wasm-bindgen crate's version. CI runs this before the tests
# (tests/it/web.rs trains the page in headless Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-system-deps.sh --with-wasm
version=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')
bindgen="${CARGO_HOME:-$HOME/.cargo}/bin/wasm-bindgen"
if ! "$bindgen" --version 2>/dev/null | grep -qx "wasm-bindgen $version"; then
    echo "installing wasm-bindgen-cli $version (a few minutes, once)" >&2
    # Not --locked: its lock file names a webpki-roots the registry no longer serves.
    cargo install --quiet wasm-bindgen-cli --version "$version"
fi
lld="$(rustc --print sysroot)/lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld"
if [ ! -x "$lld" ]; then
    echo "error: $lld is missing (rustup's toolchain ships it)" >&2
    exit 1
fi
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$lld"
RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc /usr/bin/cargo build --locked --release \
    -p wgpu-fmnist-web -Zbuild-std=std,panic_abort --target wasm32-unknown-unknown \
    --target-dir target/wasm
out=target/web
rm -rf "$out.tmp"
mkdir -p "$out.tmp/data"
"$bindgen" --target web --no-typescript --out-dir "$out.tmp/pkg" \
    target/wasm/wasm32-unknown-unknown/release/wgpu_fmnist_web.wasm
cp web/index.html web/app.js "$out.tmp/"
for dir in "${FMNIST_DATA:-}" data/fashion-mnist /usr/share/datasets/fashion-mnist; do
    [ -n "$dir" ] || continue
    if [ -f "$dir/train-images-idx3-ubyte.gz" ] || [ -f "$dir/train-images-idx3-ubyte" ]; then
        for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
            cp "$dir/$f"* "$out.tmp/data/"
        done
        break
    fi
done
rm -rf "$out"
mv "$out.tmp" "$out"
echo "built $out/ (serve it: python3 -m http.server -d $out 8000)" >&2
