import ArgumentParser
import Foundation
import KilnGraph
import KilnRuntime
import KilnTensor

/// `kiln run MODEL --input X.npy -o Y.npy`.
struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run", abstract: "Run a model on a float32 .npy batch and write its output as .npy.")

    @Argument(help: "The model (.onnx teacher or .kiln student).")
    var model: String

    @Option(help: "Input batch, float32 .npy in the model's input layout (e.g. [N, 1, 28, 28]).")
    var input: String

    @Option(name: .shortAndLong, help: "Where to write the output .npy (written atomically).")
    var output: String

    @OptionGroup var compute: ComputeOptions

    func run() throws {
        try reportingErrors {
            try compute.apply()
            let loaded = try LoadedModel(path: model)
            guard loaded.signature == (1, 1) else {
                throw DataFileError(file: model, "kiln run handles models with one input and one output; this one has \(loaded.signature.inputs) and \(loaded.signature.outputs)")
            }
            let x = try NPY.readTensor(input)
            let y: Tensor
            do {
                y = try loaded.predict(x)
            } catch let error as InterpreterError {
                throw DataFileError(file: input, error.message)
            } catch let error as KilnRuntimeError {
                throw DataFileError(file: input, error.message)
            }
            try NPY.write(y, to: output)
        }
    }
}
