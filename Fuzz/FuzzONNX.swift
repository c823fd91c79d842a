// libFuzzer target: the ONNX importer must turn any bytes into a graph or a clear error, never a trap.
import Foundation
import KilnONNX

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzONNX(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard let model = try? ONNXModel(data: Data(bytes: data, count: size), file: "fuzz.onnx") else { return 0 }
    _ = try? model.importGraph()
    return 0
}
