import Foundation

/// A one-line progress bar on stderr, drawn only when stderr is a terminal.
final class Progress {
    /// Units of the whole task (settable once it is known).
    var total: Int
    private let label: String
    private let enabled: Bool
    private let start = Date()
    private var lastDraw = Date.distantPast

    init(label: String, total: Int) {
        self.label = label
        self.total = max(total, 1)
        enabled = isatty(STDERR_FILENO) != 0
    }

    /// Redraws the bar for `done` of `total` units, at most ten times a second.
    func update(_ done: Int, detail: String = "") {
        guard enabled, Date().timeIntervalSince(lastDraw) > 0.1 || done >= total else { return }
        lastDraw = Date()
        let fraction = Double(done) / Double(total)
        let width = 30
        let filled = Int(fraction * Double(width))
        let elapsed = Date().timeIntervalSince(start)
        let eta = fraction > 0 ? elapsed / fraction - elapsed : 0
        let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
        let line = String(format: "\r%@ [%@] %d/%d %@ ETA %.0fs ", label, bar, done, total, detail, eta)
        FileHandle.standardError.write(Data(line.utf8))
    }

    /// Clears the bar's line.
    func finish() {
        guard enabled else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
    }
}
