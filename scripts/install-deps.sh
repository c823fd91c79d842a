#!/usr/bin/env bash
# Installs what Kiln needs to build and test (skips what is already installed).
# Debian packages:
#   libopenblas-dev  fp32 matrix products        zlib1g-dev        gzip'd IDX datasets
#   libdnnl-dev      fp32 convolutions (oneDNN) in the training engine
#   libpng-dev, libjpeg62-turbo-dev   PNG and JPEG images (calibration folders, kiln eval --images)
#   libonnx-testdata ONNX backend test cases      dataset-fashion-mnist  the Fashion-MNIST images
#   pkg-config       locates OpenBLAS and zlib     gcc               builds the C API example in the tests
#   gcc-aarch64-linux-gnu, libc6-dev-arm64-cross, qemu-user   the arm64 kernels, cross-compiled (with the arm64 C
#                    headers, only a recommendation of the compiler) and run under emulation by the tests
# PyPI packages (only for the test that runs students' QDQ export in onnxruntime): numpy, onnxruntime.
set -euo pipefail
packages=(libopenblas-dev libdnnl-dev libpng-dev libjpeg62-turbo-dev zlib1g-dev pkg-config gcc libonnx-testdata dataset-fashion-mnist gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
if ! command -v python3 >/dev/null; then missing+=(python3 python3-pip); fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if ! python3 -c "import numpy, onnxruntime" 2>/dev/null; then
    echo "installing PyPI packages: numpy onnxruntime" >&2
    python3 -m pip install --quiet numpy onnxruntime || python3 -m pip install --quiet --break-system-packages numpy onnxruntime
fi
