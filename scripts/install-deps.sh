#!/usr/bin/env bash
# Installs the Debian packages Kiln needs to build and test (skips those already installed).
#   libopenblas-dev  fp32 matrix products        zlib1g-dev        gzip'd IDX datasets
#   libonnx-testdata ONNX backend test cases      dataset-fashion-mnist  the Fashion-MNIST images
#   pkg-config       locates OpenBLAS and zlib
set -euo pipefail
packages=(libopenblas-dev zlib1g-dev pkg-config libonnx-testdata dataset-fashion-mnist)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
echo "installing: ${missing[*]}" >&2
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
