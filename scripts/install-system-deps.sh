#!/usr/bin/env bash
# Installs the system packages wgpu-fmnist needs on Debian/Ubuntu, only those missing:
#   mesa-vulkan-drivers + libvulkan1   software Vulkan adapter (lavapipe) for machines without a GPU
#   dataset-fashion-mnist              the real data in /usr/share/datasets/fashion-mnist
# With --with-browser (what .ci/run passes), also:
#   chromium                           headless browser the report tests render pages in
# With --with-wasm (also what .ci/run passes; scripts/build-web.sh needs it):
#   rustc-web cargo-web rust-web-src   a Rust (1.96) that builds a wasm32 standard library,
#                                      which rustup's toolchain lacks offline
set -euo pipefail

packages=(libvulkan1 mesa-vulkan-drivers dataset-fashion-mnist)
for flag in "$@"; do
    case "$flag" in
        --with-browser) packages+=(chromium) ;;
        --with-wasm) packages+=(rustc-web cargo-web rust-web-src) ;;
        *) echo "error: unknown flag $flag (--with-browser, --with-wasm)" >&2; exit 2 ;;
    esac
done
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
echo "installing: ${missing[*]}" >&2
if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null; then
    SUDO=(sudo)
else
    echo "error: need root (or sudo) to install ${missing[*]}" >&2
    exit 1
fi
"${SUDO[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
