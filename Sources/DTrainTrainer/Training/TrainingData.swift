import DTrainCore
import DTrainData
import DTrainIO
import Foundation

/// The examples of a run, tokenized and masked, with what happened to the records on the way.
public struct TrainingData {
    public var train: [SequenceExample]
    public var validation: [SequenceExample]
    public var truncated = 0
    public var dropped = 0
    public var skipped = 0
    /// Skipped records by `RecordProblem.kind` (`no_assistant_message`: nothing would carry loss).
    public var skippedByKind: [String: Int] = [:]
}

/// Reads the run's JSONL files into masked token sequences.
public enum TrainingDataLoader {
    /// Encodes every record of `paths` with the model's tokenizer and chat template; records
    /// longer than max_seq_len follow data.over_length, invalid ones data.on_error.
    static func encode(paths: [String], encoder: ExampleEncoder, options: DataOptions,
                       counts: inout (truncated: Int, dropped: Int, skipped: Int), kinds: inout [String: Int]) throws -> [SequenceExample] {
        let data = try DataLoader.load(paths: paths, encoder: encoder, options: options, keepText: false)
        counts.truncated += data.report.truncated
        counts.dropped += data.report.droppedTooLong + data.report.droppedNoLoss
        counts.skipped += data.report.invalidCount
        kinds.merge(data.report.invalidByKind, uniquingKeysWith: +)
        return data.examples.map { SequenceExample(ids: $0.ids, lossMask: $0.lossMask) }
    }

    /// Loads train and validation examples; without validation files, holds out
    /// `validation_fraction` of the training examples by a seeded hash of their tokens.
    public static func load(config: RunConfig, model: LoadedModel) throws -> TrainingData {
        var counts = (truncated: 0, dropped: 0, skipped: 0)
        var kinds: [String: Int] = [:]
        let options = config.data.options
        try options.validate()
        let encoder = try makeDataEncoder(assets: model.assets, options: options)
        var train = try encode(paths: config.data.train, encoder: encoder, options: options, counts: &counts, kinds: &kinds)
        var validation: [SequenceExample] = []
        if let v = config.data.validation {
            validation = try encode(paths: v, encoder: encoder, options: options, counts: &counts, kinds: &kinds)
        } else if config.data.validationFraction > 0 {
            let threshold = UInt64(config.data.validationFraction * Double(UInt64.max))
            var kept: [SequenceExample] = []
            for ex in train {
                if hash(ex.ids, seed: config.seed) < threshold { validation.append(ex) } else { kept.append(ex) }
            }
            train = kept
        }
        return TrainingData(train: train, validation: validation, truncated: counts.truncated, dropped: counts.dropped, skipped: counts.skipped, skippedByKind: kinds)
    }

    /// FNV-1a over the ids, mixed with the seed: where an example falls never depends on file order.
    static func hash(_ ids: [Int32], seed: UInt64) -> UInt64 {
        var h = FNV1a(basis: CounterRandom.mix(seed))
        for id in ids { h.mix(UInt64(UInt32(bitPattern: id))) }
        return CounterRandom.mix(h.value)
    }
}
