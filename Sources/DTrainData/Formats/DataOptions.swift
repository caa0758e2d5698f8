// How data files become examples: the reader's, the encoder's and the length options.
//
// The schema users write is the run config's `data:` section (`DataSection` in the trainer), which
// every command decodes and turns into these options; the defaults below are the only ones.

import Foundation

/// Everything that decides how data files become examples.
public struct DataOptions: Sendable, Equatable {
    public var reader: ReaderOptions
    public var encoder: EncoderOptions
    /// A `.jinja` file or `tokenizer_config.json` whose template replaces the model's.
    public var chatTemplate: String?
    public var maxSeqLen: Int
    public var lengthPolicy: LengthPolicy
    public var onError: ErrorPolicy

    public init(reader: ReaderOptions = ReaderOptions(), encoder: EncoderOptions = EncoderOptions(),
                chatTemplate: String? = nil, maxSeqLen: Int = 1024, lengthPolicy: LengthPolicy = .truncate,
                onError: ErrorPolicy = .fail) {
        self.reader = reader
        self.encoder = encoder
        self.chatTemplate = chatTemplate
        self.maxSeqLen = maxSeqLen
        self.lengthPolicy = lengthPolicy
        self.onError = onError
    }

    /// Cross-field rules.
    public func validate() throws {
        if maxSeqLen < 2 { throw DataOptionsError.invalid(key: "max_seq_len", value: "\(maxSeqLen)", expected: "at least 2") }
        if reader.maxLineBytes < 1 {
            throw DataOptionsError.invalid(key: "max_line_bytes", value: "\(reader.maxLineBytes)", expected: "a positive number of bytes")
        }
        for (key, target) in reader.columns {
            let known = ["text", "prompt", "completion", "messages", "instruction", "input", "output", "role", "content"]
            guard known.contains(target) else {
                throw DataOptionsError.invalid(key: "columns.\(key)", value: target, expected: "one of " + known.joined(separator: ", "))
            }
        }
        for (key, target) in reader.roles where !ChatTurn.roles.contains(target) {
            throw DataOptionsError.invalid(key: "roles.\(key)", value: target, expected: ChatTurn.roles.sorted().joined(separator: ", "))
        }
    }
}

/// A bad `data:` setting.
public enum DataOptionsError: Error, CustomStringConvertible {
    case invalid(key: String, value: String, expected: String)

    /// The key under `data:` (`columns.question`).
    public var key: String {
        switch self { case .invalid(let key, _, _): return key }
    }

    /// What is wrong with its value.
    public var problem: String {
        switch self { case .invalid(_, let value, let expected): return "\"\(value)\" is not valid; expected \(expected)" }
    }

    public var description: String { "data.\(key): \(problem)" }
}
