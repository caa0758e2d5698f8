// dtrain's command line: every command is a type here, holding its options; the commands call
// the library targets with them (training: DTrainTrainer; data: DTrainData; IO: DTrainIO).
import ArgumentParser
import DTrainCore
import DTrainTrainer
import Foundation

/// Options every command that loads a model shares.
struct ModelOptions: ParsableArguments {
    @Option(help: "A .gguf file or a Hugging Face model directory (config.json + model.safetensors).")
    var model: String
}

/// Compute threads; defaults to every core this process may use.
struct ThreadOptions: ParsableArguments {
    @Option(help: "BLAS and element-wise threads (default: all available cores, shared among the ranks mpirun or srun started on this node).")
    var threads: Int?
    var resolved: Int { threads ?? ComputeThreads.perRank }
}

/// Turns a thrown error into one clear line on stderr and exit status 1; usage errors go on to
/// `DTrain.run(arguments:)`, which exits 2 for them. `quiet`: a rank other than 0 of a command
/// whose ranks all fail alike leaves the message to rank 0.
func runReportingErrors(quiet: Bool = false, _ body: () throws -> Void) throws {
    do { try body() } catch let error as ValidationError { throw error } catch let error as ExitCode { throw error } catch {
        if !quiet { printError("error: \(userFacingDescription(error))") }
        throw ExitCode(1)
    }
}

/// The root command: `dtrain <subcommand>`.
public struct DTrain: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "dtrain",
        abstract: "Fine-tune Llama-family language models on CPU clusters.",
        subcommands: [Train.self, Inspect.self, DataCommand.self, Tokenize.self, Eval.self, Generate.self, Chat.self, Export.self, Bench.self])
    public init() {}

    /// Parses `arguments` and runs the command, then exits. Usage errors (an unknown or missing
    /// option, a bad value) exit 2 like every other bad input, not argument-parser's 64.
    public static func run(arguments: [String]? = nil) -> Never {
        do {
            var command = try parseAsRoot(arguments)
            try command.run()
            exit()
        } catch {
            if !(error is ExitCode) && exitCode(for: error) == .validationFailure {
                FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
                Foundation.exit(2)
            }
            exit(withError: error)
        }
    }
}
