#!/usr/bin/env bash
# Regenerates Sources/KilnONNX/Generated/onnx.pb.swift from Debian's onnx.proto (package libonnx-dev).
# Needs protoc (Debian protobuf-compiler) and builds protoc-gen-swift 1.39.0 in a scratch package (~1 minute).
# The generated file is committed; run this only when moving to a new onnx.proto or swift-protobuf.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
proto=/usr/include/onnx/onnx.proto
scratch="${TMPDIR:-/tmp}/kiln-protoc-gen-swift"
mkdir -p "$scratch/Sources/Empty"
cat > "$scratch/Package.swift" <<'SWIFT'
// swift-tools-version:6.0
import PackageDescription
let package = Package(
    name: "ProtocGenSwift",
    dependencies: [.package(url: "https://github.com/apple/swift-protobuf", exact: "1.39.0")],
    targets: [.target(name: "Empty", dependencies: [.product(name: "SwiftProtobuf", package: "swift-protobuf")])])
SWIFT
echo "" > "$scratch/Sources/Empty/Empty.swift"
swift build --package-path "$scratch" -c release --product protoc-gen-swift
plugin="$(swift build --package-path "$scratch" -c release --show-bin-path)/protoc-gen-swift"
out="$root/Sources/KilnONNX/Generated"
mkdir -p "$out"
protoc --plugin=protoc-gen-swift="$plugin" --swift_out="$out" --swift_opt=Visibility=Internal \
    --proto_path="$(dirname "$proto")" "$proto"
echo "wrote $out/onnx.pb.swift"
