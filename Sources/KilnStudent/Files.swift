import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

/// A problem reading or writing a data file, naming the file and, where known, the byte offset.
public struct DataFileError: Error, CustomStringConvertible, Equatable {
    /// The file involved.
    public var file: String
    /// What is wrong.
    public var message: String

    /// Creates the error.
    public init(file: String, _ message: String) {
        self.file = file
        self.message = message
    }

    public var description: String { "\(file): \(message)" }
}

/// Writes files through a temporary file in the same folder renamed into place, so an interrupted write leaves
/// the old file (or none), never a half-written one.
public enum AtomicFile {
    /// Replaces `path` with `data` atomically.
    public static func write(_ data: Data, to path: String) throws {
        let url = URL(fileURLWithPath: path)
        let temporary = url.deletingLastPathComponent()
            .appendingPathComponent(".\(url.lastPathComponent).\(getpid()).tmp")
        do {
            try data.write(to: temporary)
            if rename(temporary.path, url.path) != 0 {
                let reason = String(cString: strerror(errno))
                try? FileManager.default.removeItem(at: temporary)
                throw DataFileError(file: path, "cannot move the written file into place: \(reason)")
            }
        } catch let error as DataFileError {
            throw error
        } catch {
            try? FileManager.default.removeItem(at: temporary)
            throw DataFileError(file: path, "cannot write: \(error)")
        }
    }
}

extension KilnFile {
    /// The whole file, or a `KilnFormatError` naming what went wrong.
    public static func readBytes(_ path: String) throws -> [UInt8] {
        guard let file = fopen(path, "rb") else {
            throw KilnFormatError("cannot open: \(String(cString: strerror(errno)))")
        }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let read = fread(&chunk, 1, chunk.count, file)
            if read > 0 { bytes.append(contentsOf: chunk[0..<read]) }
            if read < chunk.count {
                if ferror(file) != 0 { throw KilnFormatError("read error after \(bytes.count) bytes") }
                break
            }
        }
        return bytes
    }
}
