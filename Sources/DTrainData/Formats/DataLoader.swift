// Files in, examples out: read every record, render and tokenize it, apply the length policy,
// and account for every record that did not become an example.

import DTrainTemplates
import Foundation

/// The maximum sequence length and what to do beyond it.
public struct LengthLimit: Sendable, Equatable {
    public var maxSeqLen: Int
    public var policy: LengthPolicy

    public init(maxSeqLen: Int, policy: LengthPolicy) {
        self.maxSeqLen = maxSeqLen
        self.policy = policy
    }

    public enum Outcome: Sendable, Equatable {
        case fits
        /// Cut to `maxSeqLen` tokens.
        case truncated
        /// Longer than `maxSeqLen` under `LengthPolicy.drop`.
        case dropped
    }

    /// Applies the policy to `example`.
    ///
    /// - Throws: `RecordProblem.tooLong` under `LengthPolicy.error`.
    public func apply(_ example: inout TokenizedExample) throws -> Outcome {
        guard example.ids.count > maxSeqLen else { return .fits }
        switch policy {
        case .truncate:
            example.ids.removeLast(example.ids.count - maxSeqLen)
            example.lossMask.removeLast(example.lossMask.count - maxSeqLen)
            return .truncated
        case .drop:
            return .dropped
        case .error:
            throw RecordProblem.tooLong(tokens: example.ids.count, limit: maxSeqLen)
        }
    }
}

/// What became of the records of a set of files.
public struct DataReport: Sendable, Equatable {
    /// One file's counts.
    public struct FileSummary: Sendable, Equatable {
        public var path: String
        /// Bytes read (after decompression).
        public var bytes: Int
        /// The records' format (nil when no record had a known shape).
        public var format: RecordFormat?
        /// Non-blank lines.
        public var records: Int
        public var invalid: Int
    }

    public var files: [FileSummary] = []
    /// Valid records per format (before the length policy).
    public var recordsByFormat: [RecordFormat: Int] = [:]
    /// Bad records (and empty files), all kinds.
    public var invalidCount = 0
    /// Bad records by `RecordProblem.kind`.
    public var invalidByKind: [String: Int] = [:]
    /// The first `sampleLimit` bad records.
    public var invalidSamples: [RecordError] = []
    public var sampleLimit = 100
    /// Examples kept.
    public var examples = 0
    /// Examples cut to the maximum length (kept).
    public var truncated = 0
    /// Examples left out for being too long (`LengthPolicy.drop`).
    public var droppedTooLong = 0
    /// Examples left out because truncation left no token that carries loss.
    public var droppedNoLoss = 0
    /// Tokens in the kept examples.
    public var tokens = 0
    /// Of those, tokens that carry loss.
    public var lossTokens = 0

    public init() {}

    /// Valid records of every format.
    public var validRecords: Int { recordsByFormat.values.reduce(0, +) }

    /// Counts a bad record.
    public mutating func addInvalid(_ error: RecordError) {
        invalidCount += 1
        invalidByKind[error.problem.kind, default: 0] += 1
        if invalidSamples.count < sampleLimit { invalidSamples.append(error) }
    }

    /// A few lines for the log.
    public var summary: String {
        var lines = [String]()
        let formats = RecordFormat.allCases.compactMap { f in recordsByFormat[f].map { "\(f) \($0)" } }
        lines.append("records: \(validRecords) valid (\(formats.joined(separator: ", "))), \(invalidCount) invalid")
        if invalidCount > 0 {
            lines.append("  invalid by kind: " + invalidByKind.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
        }
        lines.append("examples: \(examples) kept, \(truncated) truncated, \(droppedTooLong) dropped as too long, "
                      + "\(droppedNoLoss) dropped with nothing to train on after truncation")
        let fraction = tokens > 0 ? Double(lossTokens) / Double(tokens) : 0
        lines.append("tokens: \(tokens), \(lossTokens) carry loss (" + String(format: "%.1f%%", fraction * 100) + ")")
        return lines.joined(separator: "\n")
    }
}

/// Examples and the account of how they were made.
public struct EncodedData: Sendable {
    public var examples: [TokenizedExample]
    /// Where each example's record is: `locations[i]` for `examples[i]`.
    public var locations: [RecordLocation]
    public var report: DataReport
    /// The records as questions with their references, when `load` was asked for them
    /// (`questionPromptLimit`): every record that encoded, in order, but those whose prompt is
    /// over the limit (counted in `questionsTooLong`).
    public var questions: [Question] = []
    public var questionsTooLong = 0

    public init(examples: [TokenizedExample], locations: [RecordLocation], report: DataReport) {
        self.examples = examples; self.locations = locations; self.report = report
    }
}

/// Turns data files into training examples.
public enum DataLoader {
    /// Reads, renders, tokenizes and length-limits every record of `paths`, in order.
    ///
    /// - Parameters:
    ///   - encoder: the tokenizer, chat template and masking options.
    ///   - options: reading, length and error policies (`options.encoder` is not used: the
    ///     encoder carries its own).
    ///   - keepText: keep each example's rendered text (false saves memory in training).
    /// - Throws: `DataFileError` for a file that cannot be read or records that need a chat
    ///   template when there is none; under `ErrorPolicy.fail`, the first `RecordError`
    ///   (including `tooLong` under `LengthPolicy.error`).
    ///   - questionPromptLimit: also read each record as a `Question` (prompt and reference
    ///     answer, for generation and task metrics) in the same pass, skipping prompts of more
    ///     tokens than this; nil: none. One pass, so a pipe as a data file works too.
    public static func load(paths: [String], encoder: ExampleEncoder, options: DataOptions,
                            keepText: Bool = true, questionPromptLimit: Int? = nil) throws -> EncodedData {
        var examples = [TokenizedExample]()
        var locations = [RecordLocation]()
        var questions = [Question](), questionsTooLong = 0
        let limit = LengthLimit(maxSeqLen: options.maxSeqLen, policy: options.lengthPolicy)
        let report = try forEachRecord(paths: paths, options: options) { record, location, report in
            var example = try encoded(record, at: location) { try encoder.encode(record) }
            if let limit = questionPromptLimit {
                do { questions.append(try QuestionLoader.question(record, at: location, encoder: encoder, maxPromptTokens: limit)) }
                catch is RecordError { questionsTooLong += 1 }
            }
            let outcome: LengthLimit.Outcome
            do { outcome = try limit.apply(&example) } catch let problem as RecordProblem {
                throw RecordError(location, problem)
            }
            report.recordsByFormat[record.format, default: 0] += 1
            switch outcome {
            case .dropped:
                report.droppedTooLong += 1
                return
            case .truncated:
                if example.lossTokenCount == 0 {
                    report.droppedNoLoss += 1
                    return
                }
                report.truncated += 1
            case .fits:
                break
            }
            if !keepText { example.text = "" }
            locations.append(location)
            report.examples += 1
            report.tokens += example.ids.count
            report.lossTokens += example.lossTokenCount
            examples.append(example)
        }
        var data = EncodedData(examples: examples, locations: locations, report: report)
        data.questions = questions
        data.questionsTooLong = questionsTooLong
        return data
    }

    /// Reads every record of `paths` in order and hands each valid one to `body` with its
    /// location and the report being built. A record that cannot be read, or that `body`
    /// rejects with a `RecordError`, is counted as invalid in its file's summary, or thrown
    /// under `ErrorPolicy.fail`.
    static func forEachRecord(paths: [String], options: DataOptions,
                              _ body: (DataRecord, RecordLocation, inout DataReport) throws -> Void) throws -> DataReport {
        var report = DataReport()
        for path in paths {
            var reader = try DataRecordReader(path: path, options: options.reader)
            var summary = DataReport.FileSummary(path: path, bytes: reader.bytes.count, format: nil, records: 0, invalid: 0)
            try reader.forEachRecord { line, result in
                if line.number > 0 { summary.records += 1 }
                let location = RecordLocation(file: path, line: line.number)
                do {
                    try body(try result.get(), location, &report)
                } catch let error as RecordError {
                    if options.onError == .fail { throw error }
                    summary.invalid += 1
                    report.addInvalid(error)
                }
            }
            summary.format = reader.format
            report.files.append(summary)
        }
        return report
    }

    /// Runs an encoding step for the record at `location`, turning its problems into the
    /// errors the loaders report: `DataFileError.noChatTemplate`, `RecordError`.
    static func encoded<T>(_ record: DataRecord, at location: RecordLocation, _ step: () throws -> T) throws -> T {
        do {
            return try step()
        } catch let error as NoChatTemplateError {
            throw DataFileError.noChatTemplate(format: error.format, location: location)
        } catch let problem as RecordProblem {
            throw RecordError(location, problem)
        }
    }
}
