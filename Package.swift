// swift-tools-version:6.1
import PackageDescription

// Layers (see ../shared/DESIGN.md): imports only point downward.
//   KilnGraph (IR) <- KilnTensor (fp32 ops on OpenBLAS, interpreter) <- KilnONNX (importer) <- kiln (CLI)
let package = Package(
    name: "Kiln",
    products: [
        .executable(name: "kiln", targets: ["KilnCLI"]),
        .library(name: "KilnGraph", targets: ["KilnGraph"]),
        .library(name: "KilnTensor", targets: ["KilnTensor"]),
        .library(name: "KilnONNX", targets: ["KilnONNX"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-protobuf", exact: "1.39.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .target(name: "KilnGraph"),
        .target(name: "KilnTensor", dependencies: ["KilnGraph", "COpenBLAS", "CZlib"]),
        .target(name: "KilnONNX", dependencies: [
            "KilnGraph",
            .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        ]),
        .executableTarget(name: "KilnCLI", dependencies: [
            "KilnGraph", "KilnTensor", "KilnONNX",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .testTarget(name: "KilnGraphTests", dependencies: ["KilnGraph"]),
        .testTarget(name: "KilnTensorTests", dependencies: ["KilnTensor", "KilnGraph"]),
        .testTarget(name: "KilnONNXTests", dependencies: ["KilnONNX", "KilnTensor", "KilnGraph"],
                    resources: [.copy("backend-manifest.txt")]),
        .testTarget(name: "KilnCLITests", dependencies: ["KilnCLI", "KilnTensor", "KilnGraph"], exclude: ["Fixtures"]),
    ]
)
