#!/usr/bin/env bash
# Installs the system packages wgpu-fmnist needs on Debian/Ubuntu, only those missing:
#   mesa-vulkan-drivers + libvulkan1   software Vulkan adapter (lavapipe) for machines without a GPU
#   dataset-fashion-mnist              the real data in /usr/share/datasets/fashion-mnist
# With --with-browser (what .ci/run passes), also:
#   chromium                           headless browser the report tests render pages in
set -euo pipefail

packages=(libvulkan1 mesa-vulkan-drivers dataset-fashion-mnist)
if [ "${1:-}" = "--with-browser" ]; then
    packages+=(chromium)
fi
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
