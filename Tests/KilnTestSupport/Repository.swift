import Foundation
import KilnGraph
import KilnONNX

/// The repository's committed models, calibration sets and their records, for every test target.
public enum Repository {
    /// The repository's root folder.
    public static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// A path inside the repository.
    public static func path(_ relative: String) -> String { root.appendingPathComponent(relative).path }

    /// One entry of models/teachers.json (written by the training and export scripts).
    public struct Teacher: Decodable, Sendable {
        public var file: String
        public var dataset: String?
        public var top1: Double?
        public var input_mean: Float?
        public var input_std: Float?
    }

    /// models/teachers.json by teacher name.
    public static let teachers: [String: Teacher] = {
        let data = try! Data(contentsOf: root.appendingPathComponent("models/teachers.json"))
        return try! JSONDecoder().decode([String: Teacher].self, from: data)
    }()

    /// Files (in models/) of the committed Fashion-MNIST teachers, sorted.
    public static let fashionTeachers: [String] = teachers.values.filter { $0.dataset == "fashion-mnist" }.map(\.file).sorted()

    /// One entry of models/zoo/zoo.json: teachers exported as users export them, without Kiln metadata.
    public struct ZooTeacher: Decodable, Sendable {
        public var file: String
        public var input_mean: Float
        public var input_std: Float
        public var top1: Double
        public var exporter: String
    }

    /// models/zoo/zoo.json by teacher name.
    public static let zoo: [String: ZooTeacher] = {
        let data = try! Data(contentsOf: root.appendingPathComponent("models/zoo/zoo.json"))
        return try! JSONDecoder().decode([String: ZooTeacher].self, from: data)
    }()

    /// Files of the zoo teachers relative to models/ ("zoo/vgg.onnx"), sorted.
    public static let zooTeachers: [String] = zoo.values.map { "zoo/\($0.file)" }.sorted()

    /// One entry of models/edge/edge.json: the edge zoo (scripts/make_edge_zoo.py), torchvision architectures and two
    /// small detector/segmenter nets with random weights, exported as users export them.
    public struct EdgeModel: Decodable, Sendable {
        public var file: String
        public var input_shape: [Int]
        public var onnx_ops: [String]
        /// PyTorch's input and outputs on a fixed random probe (.npy files in models/edge).
        public var probe_input: String
        public var probe_outputs: [String]
    }

    /// models/edge/edge.json by model name.
    public static let edge: [String: EdgeModel] = {
        let data = try! Data(contentsOf: root.appendingPathComponent("models/edge/edge.json"))
        return try! JSONDecoder().decode([String: EdgeModel].self, from: data)
    }()

    /// How real test images are normalized for a teacher file (relative to models/), when the repository records it.
    public static func normalization(_ file: String) -> (mean: Float, std: Float)? {
        if let entry = zoo.values.first(where: { "zoo/\($0.file)" == file }) { return (entry.input_mean, entry.input_std) }
        if let entry = teachers.values.first(where: { $0.file == file }), let mean = entry.input_mean, let std = entry.input_std {
            return (mean, std)
        }
        return nil
    }
}

extension Repository {
    /// A committed teacher (file relative to models/), imported.
    public static func teacher(_ file: String) throws -> Graph {
        try ONNXModel(contentsOf: path("models/\(file)")).importGraph()
    }
}
