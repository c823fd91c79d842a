// libFuzzer target: the .kiln loader (parse, validate, compile) must reject or accept any bytes without trapping;
// an accepted model must also run one inference.
import KilnRuntime

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzKilnFile(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard let model = try? KilnModel(bytes: bytes, options: KilnModel.Options(threads: 1)) else { return 0 }
    if model.inputs.count == 1, model.outputs.count == 1, model.inputs[0].sampleCount <= 1 << 20 {
        _ = try? model.predict([Float](repeating: 0.5, count: model.inputs[0].sampleCount))
    }
    return 0
}
