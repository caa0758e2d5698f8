import ArgumentParser
import DTrainData
import DTrainTrainer
import Foundation

/// Flags every `dtrain data` command shares: how records are read and rendered.
struct DataFlags: ParsableArguments {
    @Option(help: "Run config whose data: section sets these options (flags given here win).")
    var config: String?
    @Option(help: "Record format for every file: text, prompt_completion, chat or instruction (default: detected per file).")
    var format: String?
    @Option(name: .customLong("column"), help: "Rename a key, NAME=TARGET (e.g. question=prompt); repeatable.")
    var columns: [String] = []
    @Option(name: .customLong("role"), help: "Rename a chat role, NAME=ROLE (e.g. human=user); repeatable.")
    var roles: [String] = []
    @Flag(inversion: .prefixedNo, help: "Train on prompts and user turns too (default: only completions and assistant turns).")
    var trainOnInputs: Bool?
    @Flag(inversion: .prefixedNo, help: "Render prompt/completion records through the chat template (default: concatenate).")
    var promptCompletionTemplate: Bool?
    @Option(help: "A .jinja file or tokenizer_config.json whose chat template replaces the model's.")
    var chatTemplate: String?
    @Option(help: "Longest line accepted, in bytes (data.max_line_bytes; default \(DataSection().maxLineBytes)).")
    var maxLineBytes: Int?
    @Flag(help: "Skip and count invalid records instead of stopping at the first.")
    var skipInvalid = false

    func settings() throws -> DataSettings {
        var s = DataSettings()
        s.configPath = config
        if let format {
            guard let f = RecordFormat(name: format) else {
                throw ValidationError("--format \(format): expected text, prompt_completion, chat or instruction")
            }
            s.format = f
        }
        s.columns = try DataSettings.pairs(columns, flag: "column")
        s.roles = try DataSettings.pairs(roles, flag: "role")
        s.trainOnInputs = trainOnInputs
        s.promptCompletionTemplate = promptCompletionTemplate
        s.chatTemplate = chatTemplate
        s.maxLineBytes = maxLineBytes
        if skipInvalid { s.onError = .skip }
        return s
    }
}

struct DataCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "data",
        abstract: "Check, split, deduplicate and render training data (JSONL or .jsonl.gz).",
        discussion: """
            Records are one JSON object per line: {"text"}, {"prompt", "completion"}, {"messages": [{"role", \
            "content"}, ...]} or {"instruction", "input", "output"}; the format is detected per file.
            """,
        subcommands: [Check.self, Split.self, Dedup.self, Render.self])

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Report formats, invalid records, duplicates, token lengths and loss masks; exit 1 if any record is invalid.")
        @Argument(help: "JSONL files.") var files: [String]
        @OptionGroup var model: ModelOptions
        @OptionGroup var data: DataFlags
        @Option(help: "Maximum sequence length in tokens (data.max_seq_len; default \(DataSection().maxSeqLen)).") var maxSeqLen: Int?
        @Option(name: [.customLong("over-length"), .customLong("length-policy")],
                help: "Over-long examples: truncate, drop or error (data.over_length; default \(DataSection().overLength)).")
        var lengthPolicy: String?
        @Flag(help: "Skip near-duplicate detection (exact duplicates are still counted).") var noNearDuplicates = false
        @Flag(help: "Print one JSON object on stdout.") var json = false

        func run() throws {
            var ok = true
            try runReportingErrors {
                var settings = try data.settings()
                settings.maxSeqLen = maxSeqLen
                if let lengthPolicy {
                    guard let p = LengthPolicy(rawValue: lengthPolicy) else {
                        throw ValidationError("--over-length \(lengthPolicy): expected truncate, drop or error")
                    }
                    settings.lengthPolicy = p
                }
                settings.onError = .skip
                ok = try check(settings: settings)
            }
            if !ok { throw ExitCode(1) }
        }
    }

    struct Split: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Split records into train/val/test .jsonl by a seeded hash of each record (order-independent).")
        @Argument(help: "JSONL files.") var files: [String]
        @Option(help: "Fraction of records for validation.") var val = 0.05
        @Option(help: "Fraction of records for test.") var test = 0.05
        @Option(help: "Hash seed: another seed gives another split.") var seed: UInt64 = 0
        @Option(help: "Directory for train.jsonl, val.jsonl, test.jsonl.") var out: String
        @OptionGroup var data: DataFlags

        func run() throws {
            var ok = true
            try runReportingErrors {
                ok = try split(settings: try data.settings())
            }
            if !ok { throw ExitCode(1) }
        }
    }

    struct Dedup: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove exact and near-duplicate records (MinHash LSH, verified Jaccard), keeping the first of each.")
        @Argument(help: "JSONL files.") var files: [String]
        @Option(help: "Output JSONL file.") var out: String
        @Option(help: "Least Jaccard similarity of 5-word shingle sets that counts as a near-duplicate.") var threshold = 0.8
        @Flag(help: "Remove exact duplicates only.") var exactOnly = false
        @OptionGroup var data: DataFlags

        func run() throws {
            var ok = true
            try runReportingErrors {
                guard threshold > 0 && threshold <= 1 else { throw ValidationError("--threshold must be in (0, 1]") }
                ok = try dedup(settings: try data.settings())
            }
            if !ok { throw ExitCode(1) }
        }
    }

    struct Render: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print each record rendered and tokenized: {\"text\", \"ids\", \"loss_mask\"} per line.")
        @Argument(help: "JSONL files.") var files: [String]
        @OptionGroup var model: ModelOptions
        @OptionGroup var data: DataFlags
        @Flag(help: "Render for generation (the chat template's generation prompt; no answer, no loss_mask).")
        var addGenerationPrompt = false

        func run() throws {
            var ok = true
            try runReportingErrors {
                ok = try render(settings: try data.settings())
            }
            if !ok { throw ExitCode(1) }
        }
    }
}

/// Refuses to write `output` when it is one of `inputs` (the write would truncate the input
/// before it is read).
func checkNotAnInput(_ output: String, inputs: [String]) throws {
    let out = URL(fileURLWithPath: output).resolvingSymlinksInPath().standardizedFileURL.path
    for input in inputs where URL(fileURLWithPath: input).resolvingSymlinksInPath().standardizedFileURL.path == out {
        throw DataFileError.cannotWrite(file: output, reason: "it is also an input; HINT: write to another file")
    }
}

/// Buffered writes to standard output.
struct DataStdout {
    private var buffer = [UInt8]()

    mutating func line(_ s: String) {
        buffer.append(contentsOf: s.utf8)
        buffer.append(0x0A)
        if buffer.count > 1 << 20 { flush() }
    }

    mutating func flush() {
        guard !buffer.isEmpty else { return }
        FileHandle.standardOutput.write(Data(buffer))
        buffer.removeAll(keepingCapacity: true)
    }
}
