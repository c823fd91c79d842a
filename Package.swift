// swift-tools-version:6.1
import PackageDescription

// Layers (see docs/ARCHITECTURE.md): imports only point downward.
//   KilnStudent (the student IR, .kiln codec, file errors and atomic writes; system libraries only)
//   KilnRuntime (int8 student runtime) <- KilnStudent, CKilnKernels
//   KilnGraph (IR) <- KilnTensor (fp32 ops on OpenBLAS and oneDNN, interpreter) <- KilnStudent (file errors)
//   KilnONNX (importer, QDQ export of students) <- KilnGraph, KilnStudent
//   KilnQuant (the quantization pipeline, lowering to students) <- KilnGraph, KilnTensor, KilnStudent, KilnRuntime
//   CKilnRuntime (C API, libkilnrt.so) <- KilnRuntime
//   kiln (CLI) <- everything
let package = Package(
    name: "Kiln",
    products: [
        .executable(name: "kiln", targets: ["KilnCLI"]),
        .executable(name: "kiln-footprint", targets: ["KilnFootprint"]),
        .executable(name: "kiln-kernel-bench", targets: ["KilnKernelBench"]),
        .library(name: "KilnGraph", targets: ["KilnGraph"]),
        .library(name: "KilnTensor", targets: ["KilnTensor"]),
        .library(name: "KilnONNX", targets: ["KilnONNX"]),
        .library(name: "KilnStudent", targets: ["KilnStudent"]),
        .library(name: "KilnRuntime", targets: ["KilnRuntime"]),
        .library(name: "KilnQuant", targets: ["KilnQuant"]),
        // The C API (include/kiln.h) as libkilnrt.so for C and C++ services.
        .library(name: "kilnrt", type: .dynamic, targets: ["CKilnRuntime"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-protobuf", exact: "1.39.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        // `swift package generate-documentation` (scripts/docs.sh); a plugin, linked into nothing.
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
    ],
    targets: [
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .target(name: "KilnGraph"),
        // The student leaf: StudentModel, the .kiln codec and validator, file errors, atomic writes.
        .target(name: "KilnStudent"),
        // The embedded runtime: only system libraries and FoundationEssentials, never the import/training side.
        .target(name: "CKilnKernels"),
        .target(name: "KilnRuntime", dependencies: ["KilnStudent", "CKilnKernels"]),
        // Test support: every kernel of the list against the portable one (also cross-compiled for arm64 by a test).
        .target(name: "CKilnKernelChecks", dependencies: ["CKilnKernels"]),
        // The fp32 engine's C side, for KilnTensor only: convolutions on oneDNN (Debian libdnnl-dev) and the OpenMP
        // (libgomp) thread team that oneDNN and every parallel loop of KilnTensor share.
        .target(name: "CKilnFP32", linkerSettings: [.linkedLibrary("dnnl"), .linkedLibrary("gomp")]),
        // PNG and JPEG decoding with Debian's libpng and libjpeg-turbo, for KilnTensor's image readers.
        .target(name: "CKilnImage", linkerSettings: [.linkedLibrary("png16"), .linkedLibrary("jpeg")]),
        .target(name: "KilnTensor", dependencies: ["KilnGraph", "KilnStudent", "COpenBLAS", "CZlib", "CKilnFP32",
                                                   "CKilnImage"]),
        .target(name: "KilnONNX", dependencies: [
            "KilnGraph", "KilnStudent",
            .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        ]),
        // The C API over KilnRuntime (include/kiln.h).
        .target(name: "CKilnRuntime", dependencies: ["KilnRuntime"]),
        // Embeds KilnRuntime alone, to measure the runtime's own footprint.
        .executableTarget(name: "KilnFootprint", dependencies: ["KilnRuntime"]),
        // Times every kernel of the list on shapes of real layers (the kernel microbenchmark).
        .executableTarget(name: "KilnKernelBench", dependencies: ["KilnRuntime", "CKilnKernels", "CKilnKernelChecks"]),
        .target(name: "KilnQuant", dependencies: ["KilnGraph", "KilnTensor", "KilnStudent", "KilnRuntime"]),
        .executableTarget(name: "KilnCLI", dependencies: [
            "KilnGraph", "KilnTensor", "KilnONNX", "KilnStudent", "KilnRuntime", "KilnQuant",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // Fixtures and helpers shared by the test targets (repository paths and records, the tiny student, processes).
        .target(name: "KilnTestSupport", dependencies: ["KilnStudent", "KilnGraph", "KilnONNX", "CZlib"],
                path: "Tests/KilnTestSupport"),
        .testTarget(name: "KilnGraphTests", dependencies: ["KilnGraph"]),
        .testTarget(name: "KilnTensorTests", dependencies: ["KilnTensor", "KilnGraph", "KilnStudent", "KilnTestSupport"],
                    exclude: ["Fixtures"]),
        .testTarget(name: "KilnONNXTests", dependencies: ["KilnONNX", "KilnTensor", "KilnGraph", "KilnTestSupport"],
                    resources: [.copy("backend-manifest.txt")]),
        .testTarget(name: "KilnRuntimeTests", dependencies: ["KilnRuntime", "KilnStudent", "CKilnKernelChecks", "KilnTestSupport"]),
        .testTarget(name: "KilnQuantTests", dependencies: ["KilnQuant", "KilnRuntime", "KilnStudent", "KilnONNX", "KilnTensor", "KilnGraph", "KilnTestSupport"]),
        .testTarget(name: "KilnCLITests", dependencies: ["KilnCLI", "KilnTensor", "KilnGraph", "KilnRuntime", "CKilnRuntime", "KilnTestSupport"], exclude: ["Fixtures"]),
    ]
)
