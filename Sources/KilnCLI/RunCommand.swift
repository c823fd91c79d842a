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

    @Option(name: .shortAndLong, help: ArgumentHelp("Where to write the output .npy (written atomically).",
                                                    discussion: "A model with several outputs (a detector's heads) writes OUTPUT with .0.npy, .1.npy, … in place of .npy, one file per output in the model's order."))
    var output: String

    @OptionGroup var compute: ComputeOptions

    func run() throws {
        try reportingErrors {
            try compute.apply()
            let loaded = try LoadedModel(path: model)
            guard loaded.signature.inputs == 1 else {
                throw DataFileError(file: model, "kiln run handles models with one input; this one has \(loaded.signature.inputs)")
            }
            let x = try NPY.readTensor(input)
            let outputs: [Tensor]
            do {
                outputs = try loaded.predictOutputs(x)
            } catch let error as InterpreterError {
                throw DataFileError(file: input, error.message)
            } catch let error as KilnRuntimeError {
                throw DataFileError(file: input, error.message)
            }
            for (index, y) in outputs.enumerated() {
                try NPY.write(y, to: outputs.count == 1 ? output : RunCommand.path(output, index: index))
            }
        }
    }

    /// Where output `index` of a model with several outputs goes: out.npy → out.0.npy, out.1.npy, …
    static func path(_ output: String, index: Int) -> String {
        let stem = output.hasSuffix(".npy") ? String(output.dropLast(4)) : output
        return "\(stem).\(index).npy"
    }
}
