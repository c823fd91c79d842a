// libFuzzer target: .npy parsing must accept or reject any bytes without trapping.
import Foundation
import KilnTensor

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzNPY(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    _ = try? NPY.parse(Data(bytes: data, count: size), file: "fuzz.npy")
    return 0
}
