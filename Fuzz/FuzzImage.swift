// libFuzzer target: PNG and JPEG decoding (libpng, libjpeg-turbo behind CKilnImage) and Kiln's preprocessing of
// what they decode must accept or reject any bytes without trapping.
import Foundation
import KilnStudent
import KilnTensor

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzImage(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard let image = try? ImageFile.decode(Data(bytes: data, count: size), file: "fuzz.img"),
          image.width * image.height <= 1 << 20 else { return 0 }
    let preprocessing = ImagePreprocessing(resize: 9, cropHeight: 8, cropWidth: 7, color: image.channels == 1 ? .rgb : .grayscale)
    _ = preprocessing.sample(image, domain: .normalized(mean: [0.5], std: [0.25]))
    return 0
}
