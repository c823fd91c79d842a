import FoundationEssentials
import KilnStudent

/// A student's input taken straight from 8-bit pixels: the recorded preprocessing (color, resize, crop) on the
/// image, then normalization and input quantization fused into one table per channel — each pixel level maps to
/// its quantized input value, with no float tensor in between. Equal, bit for bit, to normalizing the cropped
/// pixels to floats as `ImagePreprocessing.sample` does and running those.
public struct PixelInput: Sendable {
    /// How images become the input (from the student's metadata).
    public let preprocessing: ImagePreprocessing
    /// How pixels are normalized (from the student's metadata).
    public let domain: InputDomain
    /// The layer that quantizes the float input (it reads only the model input, nothing else does).
    let layer: Int
    /// Per channel, the quantized input value of each pixel level.
    let tables: [[UInt8]]

    /// The pixel input of `student`; throws, saying why, when the student cannot take pixels (its metadata records
    /// no preprocessing or normalization, or its input is not one [N, C, H, W] image quantized to 8 bits).
    init(_ student: StudentModel) throws {
        guard let preprocessing = try? ImagePreprocessing(metadata: student.metadata) else {
            throw KilnRuntimeError(message: "the student records no image preprocessing (quantize it with a current kiln; --resize, --crop, --color)")
        }
        guard let domain = try? InputDomain(metadata: student.metadata) else {
            throw KilnRuntimeError(message: "the student records no input normalization (quantize it with --preprocess or --input-mean/--input-std)")
        }
        guard student.inputs.count == 1 else {
            throw KilnRuntimeError(message: "pixel input needs a model with one input; this one has \(student.inputs.count)")
        }
        let input = student.inputs[0]
        let shape = student.activations[input].shape
        guard shape.count == 4, shape[1] == preprocessing.color.channels, shape[2] == preprocessing.cropHeight,
              shape[3] == preprocessing.cropWidth else {
            throw KilnRuntimeError(message: "the input \(shape) does not match the recorded preprocessing (\(preprocessing))")
        }
        let readers = student.layers.indices.filter { student.layers[$0].inputs.contains(input) }
        guard readers.count == 1, case .quantize = student.layers[readers[0]].op,
              student.activations[student.layers[readers[0]].output].bits == 8 else {
            throw KilnRuntimeError(message: "the input is not read by one 8-bit input quantizer alone (an fp32 layer reads it)")
        }
        let output = student.activations[student.layers[readers[0]].output]
        let (mean, std) = domain.normalization
        tables = (0..<shape[1]).map { c in
            let m = mean.count == 1 ? mean[0] : mean[c], s = std.count == 1 ? std[0] : std[c]
            return (0..<256).map { level in
                Requantize.quantize((Float(level) / 255 - m) / s, output.quantization, maxLevel: output.maxLevel)
            }
        }
        (self.preprocessing, self.domain, layer) = (preprocessing, domain, readers[0])
    }

    /// The images converted, resized and cropped, one after another (N × H × W × C bytes).
    public func cropped(_ images: [PixelImage]) throws -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(images.count * preprocessing.cropHeight * preprocessing.cropWidth * preprocessing.color.channels)
        for image in images {
            guard image.channels == 1 || image.channels == 3 else {
                throw KilnRuntimeError(message: "an image has \(image.channels) channels; pixel input takes 1 (gray) or 3 (RGB)")
            }
            guard image.width >= 1 && image.height >= 1 else { throw KilnRuntimeError(message: "an image is empty") }
            bytes += preprocessing.apply(to: image).pixels
        }
        return bytes
    }

    /// Writes the quantized input of the cropped pixels (HWC, the runtime's own layout of a 4-D activation).
    func quantize(_ pixels: UnsafePointer<UInt8>, count: Int, into destination: UnsafeMutablePointer<UInt8>) {
        let channels = tables.count
        tables.withUnsafeBufferPointer { tables in
            if channels == 1 {
                tables[0].withUnsafeBufferPointer { table in
                    for i in 0..<count { destination[i] = table[Int(pixels[i])] }
                }
            } else {
                for i in 0..<count { destination[i] = tables[i % channels][Int(pixels[i])] }
            }
        }
    }
}

extension KilnContext {
    /// Runs a single-input model on 8-bit images (HWC, gray or RGB, any size): each is preprocessed as the student
    /// records (color, resize of the shorter side, center crop) and quantized straight from its pixels. Returns
    /// every output for the batch, in the model's order.
    public func predictOutputs(images: [PixelImage]) throws -> [[Float]] {
        let input = try model.pixelInput()
        guard !images.isEmpty else { throw KilnRuntimeError(message: "no images given") }
        let batch = images.count
        let pixels = try input.cropped(images)
        let values = try withJoinedOutputs(batch: batch) { outputs in
            try pixels.withUnsafeBufferPointer { pixels in
                try run(pixels: pixels.baseAddress!, input: input, outputs: outputs, batch: batch)
            }
        }
        return splitOutputs(values, batch: batch)
    }

    /// Runs the model on already cropped pixels (`batch` × H × W × C bytes, the recorded crop and color) into
    /// caller-owned output buffers, without allocating once the arena fits the batch.
    public func run(croppedPixels pixels: UnsafePointer<UInt8>, outputs: [UnsafeMutableBufferPointer<Float>], batch: Int) throws {
        try run(pixels: pixels, input: try model.pixelInput(), outputs: outputs, batch: batch)
    }

    func run(pixels: UnsafePointer<UInt8>, input: PixelInput, outputs: [UnsafeMutableBufferPointer<Float>], batch: Int) throws {
        // No float input: its quantizer takes the pixels instead.
        try execute(inputs: [], outputs: outputs, batch: batch, observe: nil, profile: nil, pixels: (pixels, input))
    }
}

extension KilnModel {
    /// The model's pixel input; throws, saying why, when it cannot take pixels.
    public func pixelInput() throws -> PixelInput {
        switch pixelInputResult {
        case .success(let input): return input
        case .failure(let error): throw error
        }
    }

    /// Runs a single-input model on 8-bit images with a pooled context (see `KilnContext.predictOutputs(images:)`).
    public func predictOutputs(images: [PixelImage]) throws -> [[Float]] {
        try withIdleContext { try $0.predictOutputs(images: images) }
    }
}

extension KilnModel {
    /// The class names the student records, by output index (empty when none).
    public var classNames: [String] { ClassNames.read(student.metadata) }
}
