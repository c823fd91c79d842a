import Foundation
import Testing

/// The layer rule of docs/ARCHITECTURE.md, checked on the sources: what each target may import.
enum Layers {
    static let system: Set<String> = ["FoundationEssentials", "Glibc", "Musl", "Darwin", "Dispatch", "Synchronization"]

    /// Modules each target may import, besides `system`.
    static let allowed: [String: Set<String>] = [
        "KilnStudent": [],
        "KilnRuntime": ["KilnStudent", "CKilnKernels"],
        "CKilnRuntime": ["KilnRuntime", "KilnStudent"],
        "KilnFootprint": ["KilnRuntime", "KilnStudent"],
        "KilnKernelBench": ["KilnRuntime", "KilnStudent", "CKilnKernels", "CKilnKernelChecks", "Foundation"],
        "KilnGraph": [],
        "KilnTensor": ["KilnGraph", "KilnStudent", "COpenBLAS", "CZlib", "CKilnFP32", "CKilnImage", "Foundation"],
        "KilnONNX": ["KilnGraph", "KilnStudent", "SwiftProtobuf", "Foundation"],
        "KilnQuant": ["KilnGraph", "KilnTensor", "KilnStudent", "KilnRuntime", "Foundation"],
        "KilnCLI": ["KilnGraph", "KilnTensor", "KilnStudent", "KilnRuntime", "KilnONNX", "KilnQuant", "ArgumentParser", "Foundation"],
    ]

    static let sources = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Sources")

    /// Modules imported by the Swift files of a target, by file. An `#else` branch of `#if canImport` counts too
    /// (a platform without the first module would take it), except for the Foundation fallback of
    /// FoundationEssentials, which is the same API.
    static func imports(_ target: String) throws -> [(file: String, module: String)] {
        let folder = sources.appendingPathComponent(target)
        var result: [(String, String)] = []
        for file in try FileManager.default.subpathsOfDirectory(atPath: folder.path) where file.hasSuffix(".swift") {
            let text = try String(contentsOf: folder.appendingPathComponent(file), encoding: .utf8)
            var previous = ""
            for line in text.split(separator: "\n").map(String.init) {
                defer { previous = line }
                let words = line.split(separator: " ").map(String.init)
                guard let index = words.firstIndex(of: "import"), words[..<index].allSatisfy({ $0.hasPrefix("@") }),
                      index + 1 < words.count else { continue }
                let module = words[index + 1]
                if module == "Foundation" && previous == "#else" { continue }
                result.append((file, module))
            }
        }
        return result
    }
}

@Suite("dependency rule")
struct DependencyRuleTests {
    @Test("every target imports only what docs/ARCHITECTURE.md allows it", arguments: Layers.allowed.keys.sorted())
    func targetImports(_ target: String) throws {
        let found = try Layers.imports(target)
        #expect(!found.isEmpty || target == "KilnGraph")
        for (file, module) in found {
            #expect(Layers.system.contains(module) || Layers.allowed[target]!.contains(module), "\(target)/\(file) imports \(module)")
        }
    }

    @Test("every Swift target is in the rule's table")
    func everyTargetListed() throws {
        let targets = try FileManager.default.contentsOfDirectory(atPath: Layers.sources.path).filter { target in
            let files = (try? FileManager.default.subpathsOfDirectory(atPath: Layers.sources.appendingPathComponent(target).path)) ?? []
            return files.contains { $0.hasSuffix(".swift") }
        }
        for target in targets { #expect(Layers.allowed[target] != nil, "\(target) is not in the dependency rule's table") }
    }

    @Test("the C kernels include only their own headers and the C library's")
    func kernelIncludes() throws {
        let folder = Layers.sources.appendingPathComponent("CKilnKernels")
        let files = try FileManager.default.subpathsOfDirectory(atPath: folder.path)
        // Its own headers and lists, and the C library's (with the compilers' intrinsics headers).
        let own = Set(files.map { URL(fileURLWithPath: $0).lastPathComponent })
        let system: Set<String> = ["arm_neon.h", "cpuid.h", "immintrin.h", "math.h", "pthread.h", "sched.h", "stdatomic.h",
                                   "stddef.h", "stdint.h", "stdio.h", "stdlib.h", "string.h", "sys/auxv.h"]
        for file in files where file.hasSuffix(".c") || file.hasSuffix(".h") {
            let text = try String(contentsOf: folder.appendingPathComponent(file), encoding: .utf8)
            for line in text.split(separator: "\n") where line.hasPrefix("#include") {
                let header = line.dropFirst("#include".count).trimmingCharacters(in: CharacterSet(charactersIn: " <>\""))
                let name = URL(fileURLWithPath: header).lastPathComponent
                #expect(system.contains(header) || own.contains(name), "\(file) includes \(header)")
            }
        }
    }
}
