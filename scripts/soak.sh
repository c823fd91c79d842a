#!/usr/bin/env bash
# Soak (a measurement, not a test): one million batch-1 inferences of the committed Fashion-MNIST student on one
# context, reporting the resident set after the first 1% and at the end (goal: growth ≤ 1 MB). About 5 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-1000000}
swift build -c release --product kiln-footprint 2>&1 | tail -1
.build/release/kiln-footprint models/students/resnet20-w8a8.kiln --runs "$runs" --threads 1
