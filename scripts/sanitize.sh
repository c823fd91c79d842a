#!/usr/bin/env bash
# The test suite under AddressSanitizer (with LeakSanitizer) or ThreadSanitizer, in release mode with
# -enable-testing, each in its own build folder:
#
#   scripts/sanitize.sh address|thread [extra swift test arguments, e.g. --skip DistillationTests]
#
# The C API test is skipped: its gcc-built program cannot load a sanitizer-instrumented libkilnrt.so.
set -euo pipefail
cd "$(dirname "$0")/.."
sanitizer=${1:?address or thread}
shift
scratch=.build-$sanitizer
export LSAN_OPTIONS="suppressions=$PWD/scripts/lsan-suppressions.txt:print_suppressions=0"
export TSAN_OPTIONS="halt_on_error=1"
swift build -c release -Xswiftc -enable-testing --build-tests --sanitize="$sanitizer" --scratch-path "$scratch"
swift test -c release -Xswiftc -enable-testing --sanitize="$sanitizer" --scratch-path "$scratch" --skip-build \
    --skip CAPITests "$@"
