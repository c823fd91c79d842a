// swift-tools-version:6.1
import PackageDescription

// An HTTP inference service embedding KilnRuntime (the Kiln package, by path) on Hummingbird 2.
let package = Package(
    name: "KilnService",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "Kiln", path: "../.."),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
    ],
    targets: [
        .executableTarget(name: "KilnService", dependencies: [
            .product(name: "KilnRuntime", package: "Kiln"),
            .product(name: "Hummingbird", package: "hummingbird"),
        ]),
    ]
)
