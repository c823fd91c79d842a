import ArgumentParser
import Foundation
import KilnGraph
import KilnTensor

/// `kiln run MODEL --input X.npy -o Y.npy`.
struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run", abstract: "Run a model on a float32 .npy batch and write its output as .npy.")

    @Argument(help: "The model (.onnx).")
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
            guard loaded.graph.inputs.count == 1, loaded.graph.outputs.count == 1 else {
                throw DataFileError(file: model, "kiln run handles models with one input and one output; this one has \(loaded.graph.inputs.count) and \(loaded.graph.outputs.count)")
            }
            let x = try NPY.readTensor(input)
            let y: Tensor
            do {
                y = try loaded.predict([x])[0]
            } catch let error as InterpreterError {
                throw DataFileError(file: input, error.message)
            }
            try NPY.write(y, to: output)
        }
    }
}
