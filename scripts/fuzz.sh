#!/usr/bin/env bash
# Fuzzing with libFuzzer: builds the parsing code with -sanitize=fuzzer,address, links one target per format from
# Fuzz/ (.kiln, .npy, ONNX, PNG/JPEG images), and runs each from its committed seed corpus in Fuzz/corpus/<format>
# (new inputs go to a scratch corpus; crashes to Fuzz/crashes/). Exits non-zero if any target finds a crash.
#
#   scripts/fuzz.sh [RUNS]          a measurement: RUNS executions per target (default 200000)
#   scripts/fuzz.sh --seconds N     the smoke run of the test command: N seconds per target
set -euo pipefail
cd "$(dirname "$0")/.."
limit="-runs=${1:-200000}"
if [ "${1:-}" = "--seconds" ]; then limit="-max_total_time=${2:?--seconds needs a number}"; fi
scratch=.build-fuzz
flags=(-Xswiftc -sanitize=fuzzer,address -Xcc -fsanitize=fuzzer-no-link,address)
for target in CKilnKernels KilnStudent KilnRuntime KilnGraph CKilnFP32 CKilnImage KilnTensor KilnONNX; do
    swift build -c release --scratch-path $scratch "${flags[@]}" --target $target 2>&1 | tail -1
done
release=$scratch/release
objects() { for t in "$@"; do ls $release/$t.build/*.o; done; }
link_targets() {  # name source link-args...
    local name=$1 source=$2; shift 2
    swiftc -O -sanitize=fuzzer,address -parse-as-library -module-name "${name//-/_}" "$source" -o "$scratch/$name" \
        -I $release/Modules -Xcc -fmodule-map-file=$release/CKilnKernels.build/module.modulemap -Xcc -fmodule-map-file=Sources/COpenBLAS/module.modulemap -Xcc -fmodule-map-file=Sources/CZlib/module.modulemap \
        -Xcc -fmodule-map-file=$release/CKilnFP32.build/module.modulemap -Xcc -fmodule-map-file=$release/CKilnImage.build/module.modulemap "$@" \
        2>&1 | grep -v "Cannot export local symbol" || true   # gold's noise about ASan's private helpers
}
tensor_libs=(-lopenblas -lz -ldnnl -lgomp -lpng16 -ljpeg)
link_targets fuzz-kiln Fuzz/FuzzKilnFile.swift $(objects KilnRuntime KilnStudent CKilnKernels)
link_targets fuzz-npy Fuzz/FuzzNPY.swift $(objects KilnTensor KilnGraph KilnStudent CKilnFP32 CKilnImage) "${tensor_libs[@]}"
link_targets fuzz-image Fuzz/FuzzImage.swift $(objects KilnTensor KilnGraph KilnStudent CKilnFP32 CKilnImage) "${tensor_libs[@]}"
link_targets fuzz-onnx Fuzz/FuzzONNX.swift $(objects KilnONNX KilnGraph KilnStudent KilnRuntime CKilnKernels SwiftProtobuf)
mkdir -p Fuzz/crashes
failed=0
for format in kiln npy onnx image; do
    work=$(mktemp -d)
    echo "== fuzz-$format: $limit from Fuzz/corpus/$format ($(ls Fuzz/corpus/$format | wc -l) seeds)"
    status=0
    ASAN_OPTIONS=detect_leaks=0 $scratch/fuzz-$format "$limit" -max_len=65536 -artifact_prefix=Fuzz/crashes/$format- \
        -print_final_stats=1 "$work" Fuzz/corpus/$format > "$work.log" 2>&1 || status=$?
    grep -E "stat::number_of_executed_units|stat::new_units_added|ERROR|SUMMARY|Done" "$work.log" || true
    if [ $status -ne 0 ]; then
        echo "fuzz-$format FAILED (exit $status); the input is in Fuzz/crashes/" >&2
        tail -40 "$work.log" >&2
        failed=1
    fi
    rm -rf "$work" "$work.log"
done
exit $failed
