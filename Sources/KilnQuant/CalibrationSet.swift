import Foundation
import KilnGraph
import KilnStudent
import KilnTensor

/// Calibration images on disk: one float32 `.npy` or a folder of them, joined along the first dimension.
public enum CalibrationSet {
    /// The image folder `path` is, nil if it is a `.npy` file or a folder of `.npy` files (or does not exist: then
    /// `load` names the problem).
    public static func imageFolder(_ path: String) throws -> ImageFolder? {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue,
              !(try FileManager.default.contentsOfDirectory(atPath: path)).contains(where: { $0.hasSuffix(".npy") }) else {
            return nil
        }
        return try ImageFolder(path)
    }

    /// The images of `path`; errors name the file or folder.
    public static func load(_ path: String) throws -> Tensor {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw DataFileError(file: path, "no such file or folder")
        }
        guard isDirectory.boolValue else { return try NPY.readTensor(path) }
        let files = try FileManager.default.contentsOfDirectory(atPath: path).filter { $0.hasSuffix(".npy") }.sorted()
        guard !files.isEmpty else { throw DataFileError(file: path, "the folder holds no .npy files") }
        let parts = try files.map { try NPY.readTensor("\(path)/\($0)") }
        for (file, part) in zip(files, parts) where Array(part.shape.dropFirst()) != Array(parts[0].shape.dropFirst()) {
            throw DataFileError(file: "\(path)/\(file)", "shape \(part.shape.shapeDescription) does not match \(parts[0].shape.shapeDescription) of \(files[0])")
        }
        return Tensor(shape: [parts.reduce(0) { $0 + $1.shape[0] }] + parts[0].shape.dropFirst(),
                      scalars: parts.flatMap(\.scalars))
    }
}
