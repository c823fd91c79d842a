#!/usr/bin/env bash
# The whole test suite, in release mode (numeric code is slow in debug builds).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build -c release -Xswiftc -enable-testing --build-tests
swift build -c release -Xswiftc -enable-testing --product kilnrt   # libkilnrt.so for the C API test
swift test -c release -Xswiftc -enable-testing --skip-build "$@"
# The whole run (no arguments) also exercises what lives outside the package's tests, so that it cannot rot: the
# example service (debug build, loopback smoke test) and 30 seconds of fuzzing per parsing target.
if [ $# -eq 0 ]; then
    swift build --package-path Examples/KilnService --scratch-path .build-service
    python3 scripts/service_smoke.py .build-service/debug/KilnService
    scripts/fuzz.sh --seconds 30
fi
