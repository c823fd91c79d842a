#!/usr/bin/env bash
# The whole test suite, in release mode (numeric code is slow in debug builds).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build -c release -Xswiftc -enable-testing --build-tests
swift build -c release -Xswiftc -enable-testing --product kilnrt   # libkilnrt.so for the C API test
swift test -c release -Xswiftc -enable-testing --skip-build "$@"
