#!/usr/bin/env bash
# Builds the DocC documentation of KilnRuntime and KilnQuant (catalogs in Sources/<target>/<target>.docc) with
# swift-docc-plugin into .build-docs/<target>.doccarchive, and prints how long it took.
#   scripts/docs.sh [--static OUTPUT_DIR]   --static: also a static website per target (OUTPUT_DIR/<target>)
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
for target in KilnRuntime KilnQuant; do
    args=(--scratch-path .build-docs --allow-writing-to-directory .build-docs generate-documentation --target "$target"
          --output-path ".build-docs/$target.doccarchive" --warnings-as-errors)
    swift package "${args[@]}"
    if [ "${1:-}" = "--static" ]; then
        mkdir -p "$2"
        swift package --scratch-path .build-docs --allow-writing-to-directory "$2" generate-documentation \
            --target "$target" --output-path "$2/$target" --transform-for-static-hosting --hosting-base-path "$target"
    fi
done
echo "documentation built in $(( $(date +%s) - start )) s: .build-docs/KilnRuntime.doccarchive, .build-docs/KilnQuant.doccarchive"
