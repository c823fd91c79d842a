import Foundation
import Testing

@Suite("dependency rule")
struct DependencyRuleTests {
    @Test("KilnRuntime (and the C API over it) import only system modules and the C kernels, never the import/training side",
          arguments: ["KilnRuntime", "CKilnRuntime"])
    func runtimeImports(_ target: String) throws {
        let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Sources/\(target)")
        var allowed: Set<String> = ["FoundationEssentials", "Glibc", "Musl", "Dispatch", "Synchronization", "CKilnKernels"]
        if target == "CKilnRuntime" { allowed.insert("KilnRuntime") }
        let files = try FileManager.default.subpathsOfDirectory(atPath: folder.path).filter { $0.hasSuffix(".swift") }
        #expect(!files.isEmpty)
        for file in files {
            let text = try String(contentsOf: folder.appendingPathComponent(file), encoding: .utf8)
            for line in text.split(separator: "\n") where line.hasPrefix("import ") || line.contains(" import ") && line.hasPrefix("@") {
                let module = line.split(separator: " ").last.map(String.init) ?? ""
                #expect(allowed.contains(module), "\(file) imports \(module)")
            }
        }
    }
}
