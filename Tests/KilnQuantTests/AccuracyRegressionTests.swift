import Foundation
import KilnGraph
import KilnONNX
import KilnQuant
import KilnRuntime
import KilnTensor
import KilnTestSupport
import Testing

/// A student loaded with the kernels the accuracy suites run: the best this CPU runs, or the lower tier `KILN_ISA`
/// forces (so every tier can be measured on one machine).
func loadStudent(_ student: StudentModel) throws -> KilnModel {
    try KilnModel(student, options: KilnModel.Options(kernels: KernelChoice.requested(ProcessInfo.processInfo.environment["KILN_ISA"])))
}

/// Argmax of each row of [n, classes] logits.
func argmax(_ logits: [Float], classes: Int) -> [Int] {
    stride(from: 0, to: logits.count, by: classes).map { start in
        let row = logits[start..<(start + classes)]
        return row.indices.max { row[$0] < row[$1] }! - start
    }
}

/// Teacher and student predictions on the 10k Fashion-MNIST test images.
struct Comparison {
    var teacherTop1 = 0.0, studentTop1 = 0.0, agreement = 0.0
    var studentPredictions: [Int] = []

    /// Compares on the test images normalized as the repository records for `file` (relative to models/).
    init(teacher: Graph, student: KilnModel, file: String) throws {
        let data = try FashionMNIST(split: .test)
        let (mean, std) = Repository.normalization(file)!
        let interpreter = try Interpreter(teacher)
        let context = student.makeContext()
        var teacherCorrect = 0, studentCorrect = 0, agreeing = 0
        for start in stride(from: 0, to: data.count, by: 500) {
            let x = data.tensor(start..<(start + 500), mean: mean, std: std)
            let t = argmax(try interpreter.run([x])[0].scalars, classes: 10)
            let s = argmax(try context.predict(x.scalars), classes: 10)
            for i in 0..<500 {
                let label = data.labels[start + i]
                if t[i] == label { teacherCorrect += 1 }
                if s[i] == label { studentCorrect += 1 }
                if s[i] == t[i] { agreeing += 1 }
            }
            studentPredictions += s
        }
        teacherTop1 = Double(teacherCorrect) / 10_000
        studentTop1 = Double(studentCorrect) / 10_000
        agreement = Double(agreeing) / 10_000
    }
}

@Suite("W8A8 accuracy regression (real calibration data)")
struct AccuracyRegressionTests {
    @Test("each teacher's int8 student loses ≤ 0.3 pt top-1, agrees on ≥ 99.5%, and onnxruntime runs its QDQ export identically",
          arguments: Repository.fashionTeachers)
    func realCalibration(_ file: String) throws {
        let teacher = try Repository.teacher(file)
        let calibration = try NPY.readTensor(Repository.path("calibration/fashion-mnist-real-512.npy"))
        // As `kiln quantize --calibration fashion-mnist-real-512.npy` runs it (percentile ranges for given images).
        let job = QuantizationJob(teacher: teacher, teacherName: file,
                                  calibration: .images(calibration, description: "calibration/fashion-mnist-real-512.npy"))
        let student = try QuantizationPipeline.run(job).student
        let model = try loadStudent(student)
        let comparison = try Comparison(teacher: teacher, student: model, file: file)
        print(String(format: "%@ W8A8 (512 real images, percentile): fp32 %.2f%%, int8 %.2f%%, agreement %.2f%% (%@ kernels)",
                     file, comparison.teacherTop1 * 100, comparison.studentTop1 * 100, comparison.agreement * 100,
                     model.options.kernels.description))
        #expect(comparison.studentTop1 >= comparison.teacherTop1 - 0.003)
        #expect(comparison.agreement >= 0.995)

        // The QDQ export, run by onnxruntime (PyPI) in its exact int8 mode, must agree with KilnRuntime on ≥ 99.9%
        // of the images.
        let ortPredictions = try onnxruntimePredictions(student, label: file)
        let same = zip(ortPredictions, comparison.studentPredictions).filter { $0 == $1 }.count
        print("\(file): onnxruntime (QDQ) and KilnRuntime agree on \(same) of 10000 images")
        #expect(same >= 9_990)
    }
}

/// onnxruntime's argmax on the 10k Fashion-MNIST test images for the student's QDQ export, in its exact int8 mode
/// (scripts/qdq_predict.py; needs the PyPI packages onnx and onnxruntime).
func onnxruntimePredictions(_ student: StudentModel, label: String) throws -> [Int] {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("kiln-qdq-\(getpid())-\(label)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    let qdq = directory.appendingPathComponent("student.qdq.onnx").path
    let predictions = directory.appendingPathComponent("ort.npy").path
    try QDQExporter.export(student).write(to: URL(fileURLWithPath: qdq))
    let run = try Processes.run(command: "python3", [Repository.path("scripts/qdq_predict.py"), qdq, predictions])
    try #require(run.status == 0, "onnxruntime run failed (is the PyPI package onnxruntime installed?): \(run.stderr)")
    let ort = try NPY.read(predictions)
    try #require(ort.dtype == .int64 && ort.shape == [10_000])
    return ort.payload.withUnsafeBytes { raw in
        (0..<10_000).map { Int(Int64(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self))) }
    }
}
