#!/usr/bin/env bash
# The main job on a fresh machine: install the Debian packages, build Kiln in release mode, then turn the
# committed ResNet-20 Fashion-MNIST teacher into students without any real data and check them on the 10k test
# images: a W8A8 student from synthesized calibration data, and a W4A4 student distilled block by block on the
# same synthetic images. About 5 minutes on 2 cores after the build.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build -c release --product kiln
kiln=.build/release/kiln
out=${KILN_DEMO_DIR:-$(mktemp -d)}
$kiln inspect models/resnet20.onnx
$kiln eval models/resnet20.onnx --dataset fashion-mnist
# Zero-shot W8A8: synthesize 128 images from the teacher's BatchNorm statistics, calibrate, write the student.
$kiln quantize models/resnet20.onnx -o "$out/resnet20-w8a8.kiln" --save-calibration "$out/genie.npy"
$kiln eval "$out/resnet20-w8a8.kiln" --dataset fashion-mnist --reference models/resnet20.onnx --max-drop 0.3
# Zero-shot W4A4 with block reconstruction on the same synthetic images.
$kiln quantize models/resnet20.onnx -o "$out/resnet20-w4a4.kiln" --calibration "$out/genie.npy" --bits w4a4
$kiln eval "$out/resnet20-w4a4.kiln" --dataset fashion-mnist --reference models/resnet20.onnx --max-drop 1
echo "students in $out"
