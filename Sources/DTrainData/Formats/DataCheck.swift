// `dtrain data check`: one pass over data files that reports everything training would meet:
// records per format, every bad record, duplicates, token lengths, what the length policy would
// do, the share of tokens that carry loss, and the first example with its loss mask.

import DTrainTemplates
import Foundation

/// Settings of a data check.
public struct DataCheckOptions: Sendable {
    public var data: DataOptions
    public var nearDuplicates: NearDuplicateOptions
    /// Look for near-duplicates (exact ones are always counted).
    public var findNearDuplicates: Bool
    /// Duplicate pairs kept as examples in the report.
    public var duplicateSampleLimit: Int

    public init(data: DataOptions = DataOptions(), nearDuplicates: NearDuplicateOptions = NearDuplicateOptions(),
                findNearDuplicates: Bool = true, duplicateSampleLimit: Int = 5) {
        self.data = data
        self.nearDuplicates = nearDuplicates
        self.findNearDuplicates = findNearDuplicates
        self.duplicateSampleLimit = duplicateSampleLimit
    }
}

/// A record that repeats an earlier one.
public struct DuplicateSample: Sendable, Equatable {
    public let location: RecordLocation
    /// The earlier record it repeats.
    public let original: RecordLocation
    /// nil for an exact duplicate.
    public let jaccard: Double?

    public init(location: RecordLocation, original: RecordLocation, jaccard: Double?) {
        self.location = location
        self.original = original
        self.jaccard = jaccard
    }
}

/// What a data check found.
public struct DataCheckReport: Sendable {
    /// Records, invalid records, length policy outcomes and token counts, as training would see
    /// them; every bad record is counted whatever the error policy.
    public var data = DataReport()
    public var exactDuplicates = 0
    public var nearDuplicates = 0
    public var duplicateSamples: [DuplicateSample] = []
    /// Token count of every valid example before the length policy, in file order.
    public var lengths: [Int32] = []
    /// Examples longer than the maximum sequence length.
    public var overLength = 0
    public var maxSeqLen = 0
    public var lengthPolicy = LengthPolicy.truncate
    /// The first valid example (before the length policy) and where it came from.
    public var firstExample: (location: RecordLocation, example: TokenizedExample)?
    /// Bytes read (after decompression).
    public var bytes = 0

    /// p50, p90, p99 (nearest rank) and max of the token lengths; zeros when there are none.
    public var lengthSummary: (p50: Int, p90: Int, p99: Int, max: Int) {
        guard !lengths.isEmpty else { return (0, 0, 0, 0) }
        let sorted = lengths.sorted()
        func pick(_ p: Double) -> Int {
            let rank = Int((p / 100 * Double(sorted.count)).rounded(.up))
            return Int(sorted[min(max(rank, 1), sorted.count) - 1])
        }
        return (pick(50), pick(90), pick(99), Int(sorted[sorted.count - 1]))
    }

    /// Share of the kept examples' tokens that carry loss.
    public var lossFraction: Double {
        data.tokens > 0 ? Double(data.lossTokens) / Double(data.tokens) : 0
    }

    /// Whether anything is invalid (the check fails).
    public var hasInvalid: Bool { data.invalidCount > 0 }
}

/// Runs data checks.
public enum DataChecker {
    /// Checks `paths` with `encoder`.
    ///
    /// - Throws: `DataFileError` for a file that cannot be read or when records need a chat
    ///   template and there is none. Bad records never throw: they are all in the report.
    public static func check(paths: [String], encoder: ExampleEncoder, options: DataCheckOptions) throws -> DataCheckReport {
        var report = DataCheckReport()
        report.data.sampleLimit = 1000
        report.maxSeqLen = options.data.maxSeqLen
        report.lengthPolicy = options.data.lengthPolicy
        let limit = LengthLimit(maxSeqLen: options.data.maxSeqLen, policy: options.data.lengthPolicy)
        let dedup = Deduplicator(options: options.nearDuplicates, findNear: options.findNearDuplicates)
        var locations = [RecordLocation]()
        for path in paths {
            var reader = try DataRecordReader(path: path, options: options.data.reader)
            report.bytes += reader.bytes.count
            var summary = DataReport.FileSummary(path: path, bytes: reader.bytes.count, format: nil, records: 0, invalid: 0)
            try reader.forEachRecord { line, result in
                if line.number > 0 { summary.records += 1 }
                let location = RecordLocation(file: path, line: line.number)
                let record: DataRecord
                var example: TokenizedExample
                do {
                    record = try result.get()
                    do {
                        example = try encoder.encode(record)
                    } catch let error as NoChatTemplateError {
                        throw DataFileError.noChatTemplate(format: error.format, location: location)
                    } catch let problem as RecordProblem {
                        throw RecordError(location, problem)
                    }
                } catch let error as RecordError {
                    summary.invalid += 1
                    report.data.addInvalid(error)
                    return
                }
                report.data.recordsByFormat[record.format, default: 0] += 1
                if report.firstExample == nil { report.firstExample = (location, example) }
                report.lengths.append(Int32(example.ids.count))
                if example.ids.count > limit.maxSeqLen { report.overLength += 1 }

                let id = locations.count
                locations.append(location)
                switch dedup.check(id: id, record: record) {
                case .unique: break
                case .exact(let of):
                    report.exactDuplicates += 1
                    if report.duplicateSamples.count < options.duplicateSampleLimit {
                        report.duplicateSamples.append(DuplicateSample(location: location, original: locations[of], jaccard: nil))
                    }
                case .near(let of, let jaccard):
                    report.nearDuplicates += 1
                    if report.duplicateSamples.count < options.duplicateSampleLimit {
                        report.duplicateSamples.append(DuplicateSample(location: location, original: locations[of], jaccard: jaccard))
                    }
                }

                let outcome: LengthLimit.Outcome
                do { outcome = try limit.apply(&example) } catch let problem as RecordProblem {
                    summary.invalid += 1
                    report.data.addInvalid(RecordError(location, problem))
                    return
                }
                switch outcome {
                case .dropped:
                    report.data.droppedTooLong += 1
                    return
                case .truncated:
                    if example.lossTokenCount == 0 {
                        report.data.droppedNoLoss += 1
                        return
                    }
                    report.data.truncated += 1
                case .fits:
                    break
                }
                report.data.examples += 1
                report.data.tokens += example.ids.count
                report.data.lossTokens += example.lossTokenCount
            }
            summary.format = reader.format
            report.data.files.append(summary)
        }
        return report
    }
}

/// Shows which tokens of an example carry loss.
public enum LossMaskDisplay {
    public enum Style: Sendable {
        /// Trained stretches wrapped in ⟦ ⟧.
        case brackets
        /// Trained stretches in green, context dimmed (ANSI colours, for a terminal).
        case color
    }

    /// The example's text, token by token, with trained stretches marked; special tokens show as
    /// their text, BOS / EOS added by the encoder included.
    public static func render(_ example: TokenizedExample, tokenizer: BPETokenizer, style: Style) -> String {
        var out = ""
        var run = [UInt8]()
        var runTrained: UInt8 = 0
        func flush() {
            guard !run.isEmpty else { return }
            let text = String(decoding: run, as: UTF8.self)
            switch style {
            case .brackets: out += runTrained == 1 ? "⟦" + text + "⟧" : text
            case .color: out += runTrained == 1 ? "\u{1B}[32m" + text + "\u{1B}[0m" : "\u{1B}[2m" + text + "\u{1B}[0m"
            }
            run.removeAll(keepingCapacity: true)
        }
        for (id, m) in zip(example.ids, example.lossMask) {
            if m != runTrained { flush(); runTrained = m }
            run.append(contentsOf: tokenizer.decodeBytes([id]))
        }
        flush()
        return out
    }
}
