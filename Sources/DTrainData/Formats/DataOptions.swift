// The `data:` section of a run config: how files are read, rendered, masked and cut to length.
//
//   data:
//     format: chat                 # text | prompt_completion | chat | instruction; omit to detect per file
//     columns: {question: prompt, answer: completion}   # rename keys (record and message keys)
//     roles: {human: user, gpt: assistant}              # rename chat roles
//     train_on_inputs: false       # true: prompts and user turns carry loss too
//     prompt_completion_template: false   # true: render prompt/completion through the chat template
//     append_eos: true             # EOS after text and plain prompt/completion examples
//     add_bos: null                # BOS before them; null follows the tokenizer
//     chat_template: null          # a .jinja file or tokenizer_config.json overriding the model's
//     max_seq_len: 2048
//     length_policy: truncate      # truncate | drop | error
//     on_error: fail               # fail | skip (skip counts and reports bad records)
//     max_line_bytes: 1048576

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
                chatTemplate: String? = nil, maxSeqLen: Int = 2048, lengthPolicy: LengthPolicy = .truncate,
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
            throw DataOptionsError.invalid(key: "roles.\(key)", value: target, expected: "system, user or assistant")
        }
    }
}

extension DataOptions: Decodable {
    enum Key: String, CodingKey, CaseIterable {
        case format, columns, roles
        case maxLineBytes = "max_line_bytes"
        case trainOnInputs = "train_on_inputs"
        case promptCompletionTemplate = "prompt_completion_template"
        case appendEOS = "append_eos"
        case addBOS = "add_bos"
        case chatTemplate = "chat_template"
        case maxSeqLen = "max_seq_len"
        case lengthPolicy = "length_policy"
        case onError = "on_error"
    }

    struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    /// Decodes the snake_case keys above; unknown keys are rejected. Missing keys keep defaults.
    public init(from decoder: Decoder) throws {
        let all = try decoder.container(keyedBy: AnyKey.self)
        for key in all.allKeys where Key(rawValue: key.stringValue) == nil {
            throw DataOptionsError.unknownKey(key.stringValue, known: Key.allCases.map(\.rawValue))
        }
        let c = try decoder.container(keyedBy: Key.self)
        self.init()
        if let name = try c.decodeIfPresent(String.self, forKey: .format) {
            guard let f = RecordFormat(name: name) else {
                throw DataOptionsError.invalid(key: "format", value: name, expected: "text, prompt_completion, chat or instruction")
            }
            reader.format = f
        }
        reader.columns = try c.decodeIfPresent([String: String].self, forKey: .columns) ?? [:]
        reader.roles = try c.decodeIfPresent([String: String].self, forKey: .roles) ?? [:]
        reader.maxLineBytes = try c.decodeIfPresent(Int.self, forKey: .maxLineBytes) ?? reader.maxLineBytes
        encoder.trainOnInputs = try c.decodeIfPresent(Bool.self, forKey: .trainOnInputs) ?? false
        encoder.promptCompletionUsesTemplate = try c.decodeIfPresent(Bool.self, forKey: .promptCompletionTemplate) ?? false
        encoder.appendEOS = try c.decodeIfPresent(Bool.self, forKey: .appendEOS) ?? true
        encoder.addBOS = try c.decodeIfPresent(Bool.self, forKey: .addBOS)
        chatTemplate = try c.decodeIfPresent(String.self, forKey: .chatTemplate)
        maxSeqLen = try c.decodeIfPresent(Int.self, forKey: .maxSeqLen) ?? maxSeqLen
        if let name = try c.decodeIfPresent(String.self, forKey: .lengthPolicy) {
            guard let p = LengthPolicy(rawValue: name) else {
                throw DataOptionsError.invalid(key: "length_policy", value: name, expected: "truncate, drop or error")
            }
            lengthPolicy = p
        }
        if let name = try c.decodeIfPresent(String.self, forKey: .onError) {
            guard let p = ErrorPolicy(rawValue: name) else {
                throw DataOptionsError.invalid(key: "on_error", value: name, expected: "fail or skip")
            }
            onError = p
        }
        try validate()
    }
}

/// A bad `data:` setting.
public enum DataOptionsError: Error, CustomStringConvertible {
    case unknownKey(String, known: [String])
    case invalid(key: String, value: String, expected: String)

    public var description: String {
        switch self {
        case .unknownKey(let key, let known):
            return "data.\(key): unknown key; expected one of " + known.joined(separator: ", ")
        case .invalid(let key, let value, let expected):
            return "data.\(key): \"\(value)\" is not valid; expected \(expected)"
        }
    }
}
