import Foundation
import Synchronization

/// Runs programs for the tests and captures what they print.
public enum Processes {
    /// Exit status and output of a finished program.
    public struct Result: Sendable {
        public var status: Int32
        public var stdout: String
        public var stderr: String
    }

    /// Runs `path` with `arguments`; `environment` adds to (or overrides) the inherited one.
    public static func run(_ path: String, _ arguments: [String], environment: [String: String] = [:]) throws -> Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        // Read stderr on another thread: a child that fills one pipe while we wait on the other would hang.
        let stderrData = Mutex(Data())
        let done = DispatchSemaphore(value: 0)
        Thread {
            let data = err.fileHandleForReading.readDataToEndOfFile()
            stderrData.withLock { $0 = data }
            done.signal()
        }.start()
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        done.wait()
        let stderr = stderrData.withLock { $0 }
        process.waitUntilExit()
        return Result(status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self),
                      stderr: String(decoding: stderr, as: UTF8.self))
    }

    /// Runs a program found on the PATH.
    public static func run(command: String, _ arguments: [String], environment: [String: String] = [:]) throws -> Result {
        try run("/usr/bin/env", [command] + arguments, environment: environment)
    }

    /// SHA-256 of a file, by the system's sha256sum.
    public static func sha256(_ path: String) throws -> String {
        String(try run(command: "sha256sum", [path]).stdout.split(separator: " ").first ?? "")
    }
}
