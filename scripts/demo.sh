#!/usr/bin/env bash
# The main job on a fresh machine: install the Debian packages, build Kiln in release mode, then inspect and
# evaluate the committed ResNet-20 Fashion-MNIST teacher on the 10k test images.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build -c release --product kiln
kiln=.build/release/kiln
$kiln inspect models/resnet20.onnx
$kiln eval models/resnet20.onnx --dataset fashion-mnist
