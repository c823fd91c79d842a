#!/usr/bin/env bash
# Prints the CPU model, the kernel tier Kiln's runtime chooses on it and OpenBLAS's core type, so that a test run
# or benchmark names the machine it ran on. Needs a C compiler (gcc or cc); falls back to /proc/cpuinfo without one.
set -euo pipefail
cd "$(dirname "$0")/.."
compiler=$(command -v gcc || command -v cc || true)
if [ -z "$compiler" ]; then
    echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') (no C compiler yet: kernel tier not probed)"
    exit 0
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"$compiler" -O1 -ISources/CKilnKernels/include scripts/machine_info.c Sources/CKilnKernels/cpu.c -o "$scratch/machine-info" -ldl -lpthread
"$scratch/machine-info"
echo "cores: $(nproc)"
