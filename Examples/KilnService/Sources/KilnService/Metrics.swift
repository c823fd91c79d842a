import Synchronization

/// Request counters and a latency histogram, printed in the Prometheus text format.
final class Metrics: Sendable {
    /// Upper bounds (seconds) of the latency histogram buckets.
    static let bounds: [Double] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1]

    private struct State {
        var requests: [String: Int] = [:]  // by "route status"
        var buckets = [Int](repeating: 0, count: Metrics.bounds.count + 1)
        var latencyCount = 0
        var latencySum = 0.0
        var rejected = 0
    }

    private let state = Mutex(State())

    /// Counts a finished request and, for predictions, its latency.
    func record(route: String, status: Int, seconds: Double?) {
        state.withLock { s in
            s.requests["\(route) \(status)", default: 0] += 1
            if let seconds {
                let bucket = Metrics.bounds.firstIndex { seconds <= $0 } ?? Metrics.bounds.count
                s.buckets[bucket] += 1
                s.latencyCount += 1
                s.latencySum += seconds
            }
        }
    }

    /// Counts a request turned away because too many were in flight.
    func recordRejected() { state.withLock { $0.rejected += 1 } }

    /// The Prometheus exposition text.
    func text(inFlight: Int) -> String {
        state.withLock { s in
            var lines = ["# HELP kiln_requests_total Requests by route and status.", "# TYPE kiln_requests_total counter"]
            for (key, count) in s.requests.sorted(by: { $0.key < $1.key }) {
                let parts = key.split(separator: " ")
                lines.append("kiln_requests_total{route=\"\(parts[0])\",status=\"\(parts[1])\"} \(count)")
            }
            let errors = s.requests.filter { (Int($0.key.split(separator: " ")[1]) ?? 0) >= 400 }.values.reduce(0, +)
            lines += ["# HELP kiln_errors_total Requests answered with a 4xx or 5xx status.", "# TYPE kiln_errors_total counter",
                      "kiln_errors_total \(errors)",
                      "# HELP kiln_rejected_total Requests refused with 503 because too many were in flight.",
                      "# TYPE kiln_rejected_total counter", "kiln_rejected_total \(s.rejected)",
                      "# HELP kiln_in_flight Prediction requests being served.", "# TYPE kiln_in_flight gauge",
                      "kiln_in_flight \(inFlight)",
                      "# HELP kiln_predict_seconds Latency of successful predictions.", "# TYPE kiln_predict_seconds histogram"]
            var cumulative = 0
            for (bound, count) in zip(Metrics.bounds, s.buckets) {
                cumulative += count
                lines.append("kiln_predict_seconds_bucket{le=\"\(bound)\"} \(cumulative)")
            }
            lines.append("kiln_predict_seconds_bucket{le=\"+Inf\"} \(s.latencyCount)")
            lines.append("kiln_predict_seconds_sum \(s.latencySum)")
            lines.append("kiln_predict_seconds_count \(s.latencyCount)")
            return lines.joined(separator: "\n") + "\n"
        }
    }
}
