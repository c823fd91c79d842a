// kiln-service: an HTTP inference server for one Kiln student.
//
//   KilnService STUDENT.kiln [--host 127.0.0.1] [--port 8080] [--max-in-flight 32] [--max-batch 64] [--threads 1]
//
//   POST /v1/predict   body: a JSON array of numbers (Content-Type: application/json) or raw little-endian float32
//                      (Content-Type: application/octet-stream), batch × input size values in the model's layout;
//                      answer: {"batch": n, "argmax": [...], "outputs": [[...], ...]}
//   GET  /healthz      "ok"
//   GET  /metrics      Prometheus text: requests by route and status, errors, rejections, in-flight, latency histogram
//
// Bad requests get a 4xx with a JSON message; more than --max-in-flight concurrent predictions get 503. SIGTERM or
// SIGINT stops accepting connections and finishes the requests in flight (Hummingbird's graceful shutdown).
import Foundation
import Hummingbird
import KilnRuntime
import Synchronization

/// Command-line settings.
struct Settings {
    var model = ""
    var host = "127.0.0.1"
    var port = 8080
    var maxInFlight = 32
    var maxBatch = 64
    var threads = 1

    init(_ arguments: [String]) throws {
        var rest = arguments.dropFirst()
        while let argument = rest.popFirst() {
            func value() throws -> String {
                guard let v = rest.popFirst() else { throw ServiceError("\(argument) needs a value") }
                return v
            }
            func number() throws -> Int {
                let text = try value()
                guard let n = Int(text), n > 0 else { throw ServiceError("\(argument) must be a positive integer, got '\(text)'") }
                return n
            }
            switch argument {
            case "--host": host = try value()
            case "--port": port = try number()
            case "--max-in-flight": maxInFlight = try number()
            case "--max-batch": maxBatch = try number()
            case "--threads": threads = try number()
            case let path where !path.hasPrefix("-") && model.isEmpty: model = path
            default: throw ServiceError("unknown argument '\(argument)'")
            }
        }
        guard !model.isEmpty else {
            throw ServiceError("usage: KilnService STUDENT.kiln [--host H] [--port P] [--max-in-flight N] [--max-batch N] [--threads N]")
        }
    }
}

struct ServiceError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A request the service refuses, with its status and the message sent back.
struct Rejection: Error {
    var status: HTTPResponse.Status
    var message: String
}

/// What a prediction returns.
struct Prediction: Encodable {
    var batch: Int
    var argmax: [Int]
    var outputs: [[Float]]
}

/// The model, its limits and the service's counters.
final class Predictor: Sendable {
    let model: KilnModel
    let settings: Settings
    let metrics = Metrics()
    let inFlight = Atomic<Int>(0)
    /// Predictions run here, off Swift's cooperative threads (they are CPU-bound and synchronous).
    let queue = DispatchQueue(label: "kiln.predict", attributes: .concurrent)

    init(_ settings: Settings) throws {
        self.settings = settings
        model = try KilnModel(contentsOf: URL(fileURLWithPath: settings.model), options: KilnModel.Options(threads: settings.threads))
        guard model.inputs.count == 1, model.outputs.count == 1 else {
            throw ServiceError("\(settings.model): the service serves models with one input and one output")
        }
    }

    var sampleSize: Int { model.inputs[0].sampleCount }
    var maxBodyBytes: Int { settings.maxBatch * sampleSize * 24 + 1024 }  // JSON text of the largest batch

    /// The input values of a request body, validated.
    func inputs(_ body: ByteBuffer, contentType: String?) throws -> [Float] {
        let type = contentType?.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
        var values: [Float]
        switch type {
        case "application/json":
            guard let parsed = try? JSONDecoder().decode([Float].self, from: Data(body.getBytes(at: body.readerIndex, length: body.readableBytes) ?? [])) else {
                throw Rejection(status: .badRequest, message: "the body must be a JSON array of numbers")
            }
            values = parsed
        case "application/octet-stream":
            guard body.readableBytes % 4 == 0 else {
                throw Rejection(status: .badRequest, message: "a float32 body needs a multiple of 4 bytes, got \(body.readableBytes)")
            }
            values = body.withUnsafeReadableBytes { raw in
                (0..<(raw.count / 4)).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) }
            }
        default:
            throw Rejection(status: .unsupportedMediaType,
                            message: "Content-Type must be application/json or application/octet-stream, got \(contentType ?? "none")")
        }
        let shape = "[" + model.inputs[0].shape.dropFirst().map(String.init).joined(separator: ", ") + "]"
        guard !values.isEmpty, values.count % sampleSize == 0 else {
            throw Rejection(status: .badRequest,
                            message: "expected a multiple of \(sampleSize) values (samples of \(shape)), got \(values.count)")
        }
        guard values.count / sampleSize <= settings.maxBatch else {
            throw Rejection(status: .contentTooLarge, message: "at most \(settings.maxBatch) samples per request, got \(values.count / sampleSize)")
        }
        if let bad = values.firstIndex(where: { !$0.isFinite }) {
            throw Rejection(status: .badRequest, message: "value \(bad) is \(values[bad]); inputs must be finite")
        }
        return values
    }

    /// Runs the model on the prediction queue.
    func predict(_ values: [Float]) async throws -> Prediction {
        let classes = model.outputs[0].sampleCount
        let output: [Float] = try await withCheckedThrowingContinuation { continuation in
            queue.async { continuation.resume(with: Result { try self.model.predict(values) }) }
        }
        let batch = values.count / sampleSize
        let rows = (0..<batch).map { Array(output[($0 * classes)..<(($0 + 1) * classes)]) }
        return Prediction(batch: batch, argmax: rows.map { row in row.indices.max { row[$0] < row[$1] } ?? 0 }, outputs: rows)
    }
}

func json(_ status: HTTPResponse.Status, _ data: Data) -> Response {
    Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
}

func errorResponse(_ status: HTTPResponse.Status, _ message: String) -> Response {
    let data = (try? JSONEncoder().encode(["error": message])) ?? Data("{}".utf8)
    return json(status, data)
}

let settings: Settings
let predictor: Predictor
do {
    settings = try Settings(CommandLine.arguments)
    predictor = try Predictor(settings)
} catch {
    FileHandle.standardError.write(Data("KilnService: \(error)\n".utf8))
    exit(1)
}

let router = Router()
router.get("healthz") { _, _ -> Response in
    predictor.metrics.record(route: "/healthz", status: 200, seconds: nil)
    return Response(status: .ok, headers: [.contentType: "text/plain"], body: .init(byteBuffer: ByteBuffer(string: "ok\n")))
}
router.get("metrics") { _, _ -> Response in
    let text = predictor.metrics.text(inFlight: predictor.inFlight.load(ordering: .relaxed))
    return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"], body: .init(byteBuffer: ByteBuffer(string: text)))
}
router.post("v1/predict") { request, _ -> Response in
    let start = ContinuousClock.now
    func finish(_ response: Response) -> Response {
        let elapsed = ContinuousClock.now - start
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        predictor.metrics.record(route: "/v1/predict", status: Int(response.status.code), seconds: response.status == .ok ? seconds : nil)
        return response
    }
    // Bound the work in flight: excess requests are turned away at once.
    let running = predictor.inFlight.add(1, ordering: .relaxed).newValue
    defer { predictor.inFlight.subtract(1, ordering: .relaxed) }
    guard running <= settings.maxInFlight else {
        predictor.metrics.recordRejected()
        return finish(errorResponse(.serviceUnavailable, "busy: \(settings.maxInFlight) predictions in flight"))
    }
    var request = request
    do {
        let body: ByteBuffer
        do {
            body = try await request.collectBody(upTo: predictor.maxBodyBytes)
        } catch let tooLarge as HTTPResponseError where tooLarge.status == .contentTooLarge {
            throw Rejection(status: .contentTooLarge, message: "the body exceeds \(predictor.maxBodyBytes) bytes")
        }
        let values = try predictor.inputs(body, contentType: request.headers[.contentType])
        let prediction = try await predictor.predict(values)
        return finish(json(.ok, try JSONEncoder().encode(prediction)))
    } catch let rejection as Rejection {
        return finish(errorResponse(rejection.status, rejection.message))
    } catch {
        return finish(errorResponse(.internalServerError, "\(error)"))
    }
}

let app = Application(router: router, configuration: .init(address: .hostname(settings.host, port: settings.port),
                                                          serverName: "kiln-service"))
FileHandle.standardError.write(Data("KilnService: serving \(settings.model) on http://\(settings.host):\(settings.port)\n".utf8))
try await app.runService()
FileHandle.standardError.write(Data("KilnService: stopped\n".utf8))
