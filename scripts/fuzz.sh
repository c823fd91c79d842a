#!/usr/bin/env bash
# Fuzzing with libFuzzer (a measurement, not a test): builds the parsing code with -sanitize=fuzzer,address, links
# one target per format from Fuzz/, and runs each for a fixed number of executions from its committed seed corpus
# in Fuzz/corpus/<format> (new inputs go to a scratch corpus; crashes to Fuzz/crashes/).
#
#   scripts/fuzz.sh [RUNS]     (default 200000 executions per target)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-200000}
scratch=.build-fuzz
flags=(-Xswiftc -sanitize=fuzzer,address -Xcc -fsanitize=fuzzer-no-link,address)
for target in CKilnKernels KilnRuntime KilnGraph KilnTensor KilnONNX; do
    swift build -c release --scratch-path $scratch "${flags[@]}" --target $target 2>&1 | tail -1
done
release=$scratch/release
objects() { for t in "$@"; do ls $release/$t.build/*.o; done; }
link_targets() {  # name source link-args...
    local name=$1 source=$2; shift 2
    swiftc -O -sanitize=fuzzer,address -parse-as-library -module-name "${name//-/_}" "$source" -o "$scratch/$name" \
        -I $release/Modules -Xcc -fmodule-map-file=$release/CKilnKernels.build/module.modulemap -Xcc -fmodule-map-file=Sources/COpenBLAS/module.modulemap -Xcc -fmodule-map-file=Sources/CZlib/module.modulemap "$@" \
        2>&1 | grep -v "Cannot export local symbol" || true   # gold's noise about ASan's private helpers
}
link_targets fuzz-kiln Fuzz/FuzzKilnFile.swift $(objects KilnRuntime CKilnKernels)
link_targets fuzz-npy Fuzz/FuzzNPY.swift $(objects KilnTensor KilnGraph) -lopenblas -lz
link_targets fuzz-onnx Fuzz/FuzzONNX.swift $(objects KilnONNX KilnGraph KilnRuntime CKilnKernels SwiftProtobuf)
mkdir -p Fuzz/crashes
for format in kiln npy onnx; do
    work=$(mktemp -d)
    echo "== fuzz-$format: $runs executions from Fuzz/corpus/$format ($(ls Fuzz/corpus/$format | wc -l) seeds)"
    ASAN_OPTIONS=detect_leaks=0 $scratch/fuzz-$format -runs="$runs" -max_len=65536 -artifact_prefix=Fuzz/crashes/$format- \
        -print_final_stats=1 "$work" Fuzz/corpus/$format 2>&1 | grep -E "stat::number_of_executed_units|stat::new_units_added|ERROR|SUMMARY|Done" || true
    rm -rf "$work"
done
