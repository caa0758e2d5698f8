// The record shapes a training file may hold, the decoded record, and the errors of a bad line.
//
// One JSON object per line, in one of four shapes (after the column mapping renames keys):
//   text               {"text": "..."}                                   every token trained
//   prompt_completion  {"prompt": "...", "completion": "..."}            completion trained
//   chat               {"messages": [{"role": "user", "content": "..."}, ...]}   assistant turns trained
//   instruction        {"instruction": "...", "input": "..."?, "output": "..."}   output trained
// Other keys are ignored. A file's shape is detected from its first record that has one, or set
// for all files (`ReaderOptions.format`).

import DTrainTemplates
import Foundation

/// The shape of a training record.
public enum RecordFormat: String, Sendable, Hashable, CaseIterable, Codable, CustomStringConvertible {
    /// `{"text"}`: raw text; every token carries loss.
    case text
    /// `{"prompt", "completion"}`: plain concatenation; the completion carries loss.
    case promptCompletion = "prompt_completion"
    /// `{"messages": [{"role", "content"}...]}`: rendered with the chat template; assistant turns carry loss.
    case chat
    /// `{"instruction", "input"?, "output"}`: rendered as a user and an assistant message.
    case instruction

    public var description: String { rawValue }

    /// An example record, for error messages.
    public var example: String {
        switch self {
        case .text: return #"{"text": "..."}"#
        case .promptCompletion: return #"{"prompt": "...", "completion": "..."}"#
        case .chat: return #"{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}"#
        case .instruction: return #"{"instruction": "...", "input": "...", "output": "..."}"#
        }
    }

    /// Parses `text`, `prompt_completion` (or `prompt-completion`, `completion`), `chat` (or
    /// `messages`), `instruction`.
    public init?(name: String) {
        switch name.lowercased() {
        case "text", "raw": self = .text
        case "prompt_completion", "prompt-completion", "completion", "promptcompletion": self = .promptCompletion
        case "chat", "messages", "conversation": self = .chat
        case "instruction", "alpaca": self = .instruction
        default: return nil
        }
    }
}

/// One message of a chat record, after role mapping and validation.
public struct ChatTurn: Sendable, Hashable {
    /// One of `roles`.
    public var role: String
    public var content: String
    /// The record's `content` was null or absent (an assistant message that only calls tools):
    /// the template sees None, as transformers passes it.
    public var contentIsNull = false
    /// The message's other fields, in record order, passed to the template as they are: an
    /// assistant's `tool_calls`, a tool message's `name` or `tool_call_id`.
    public var extra: [RecordJSONMember] = []

    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }

    /// The roles a chat record may use.
    public static let roles: Set<String> = ["system", "user", "assistant", "tool", "ipython", "function"]
    /// Messages that are tool results the model reads (OpenAI's `tool`, Llama 3.1's `ipython`,
    /// the older `function`): context, never trained on, even with train_on_inputs.
    public static let toolRoles: Set<String> = ["tool", "ipython", "function"]
}

/// A decoded, validated training record.
public enum DataRecord: Sendable, Hashable {
    case text(String)
    case promptCompletion(prompt: String, completion: String)
    case chat([ChatTurn])
    /// `input` is "" when the record has none (absent, null or empty).
    case instruction(instruction: String, input: String, output: String)

    public var format: RecordFormat {
        switch self {
        case .text: return .text
        case .promptCompletion: return .promptCompletion
        case .chat: return .chat
        case .instruction: return .instruction
        }
    }

    /// The record's messages as a chat: instruction becomes a user message of instruction, a blank
    /// line and input (input only when non-empty), then an assistant message of output; prompt /
    /// completion becomes one user and one assistant message; text has none.
    public var chatTurns: [ChatTurn]? {
        switch self {
        case .text: return nil
        case .promptCompletion(let p, let c):
            return [ChatTurn(role: "user", content: p), ChatTurn(role: "assistant", content: c)]
        case .chat(let turns): return turns
        case .instruction(let instruction, let input, let output):
            let user = input.isEmpty ? instruction : instruction + "\n\n" + input
            return [ChatTurn(role: "user", content: user), ChatTurn(role: "assistant", content: output)]
        }
    }

    /// The record as a prompt to answer and its reference answer, for generating and scoring
    /// answers: a prompt/completion's prompt and completion, an instruction with its output, a
    /// chat up to its last assistant message and that message's content. The question is a
    /// record to render with `ExampleEncoder.render(_:addGenerationPrompt: true)`. A text, or a
    /// chat with no assistant message, is a prompt to continue with no reference (nil).
    public var questionAndAnswer: (question: DataRecord, answer: String?) {
        switch self {
        case .text: return (self, nil)
        case .promptCompletion(_, let c): return (self, c)
        case .instruction(_, _, let output): return (self, output)
        case .chat(let turns):
            guard let last = turns.lastIndex(where: { $0.role == "assistant" }) else { return (self, nil) }
            return (.chat(Array(turns[..<last])), turns[last].content)
        }
    }

    /// The record with `answer` as its reference answer (the completion, the output, the last
    /// assistant message's content), keeping the reference's leading whitespace: how
    /// classification scores each label as the record's answer. Nil when there is no answer.
    public func replacingAnswer(with answer: String) -> DataRecord? {
        func lead(_ s: String) -> String { String(s.prefix { $0.isWhitespace }) }
        switch self {
        case .text: return nil
        case .promptCompletion(let p, let c): return .promptCompletion(prompt: p, completion: lead(c) + answer)
        case .instruction(let i, let input, let o): return .instruction(instruction: i, input: input, output: lead(o) + answer)
        case .chat(var turns):
            guard let last = turns.lastIndex(where: { $0.role == "assistant" }) else { return nil }
            turns[last].content = lead(turns[last].content) + answer
            turns[last].contentIsNull = false
            return .chat(turns)
        }
    }

    /// The record's strings joined by newlines: what near-duplicate detection compares. A chat's
    /// system messages are left out (a system prompt shared by many records would make short,
    /// different conversations look alike).
    public var contentText: String {
        switch self {
        case .text(let t): return t
        case .promptCompletion(let p, let c): return p + "\n" + c
        case .chat(let turns): return turns.filter { $0.role != "system" }.map(\.content).joined(separator: "\n")
        case .instruction(let i, let input, let o): return input.isEmpty ? i + "\n" + o : i + "\n" + input + "\n" + o
        }
    }

    /// An unambiguous byte string of the record's content (format, roles, fields, separated by
    /// NUL), independent of JSON key order, spacing and column names: what exact-duplicate
    /// detection and the split hash.
    public var canonicalBytes: [UInt8] {
        var out = [UInt8]()
        func add(_ s: String) {
            out.append(contentsOf: s.utf8)
            out.append(0)
        }
        add(format.rawValue)
        switch self {
        case .text(let t): add(t)
        case .promptCompletion(let p, let c): add(p); add(c)
        case .chat(let turns):
            for t in turns {
                add(t.role); add(t.contentIsNull ? "\u{0}null" : t.content)
                for m in t.extra { add(m.key); add(m.value.canonicalText) }
            }
        case .instruction(let i, let input, let o): add(i); add(input); add(o)
        }
        return out
    }
}

/// Where a record came from: file and 1-based line (0 for the file as a whole).
public struct RecordLocation: Sendable, Hashable, CustomStringConvertible {
    public let file: String
    public let line: Int

    public init(file: String, line: Int) {
        self.file = file
        self.line = line
    }

    public var description: String { line > 0 ? "\(file):\(line)" : file }
}

/// What is wrong with one record (or, for `emptyFile`, with a whole file).
public enum RecordProblem: Sendable, Hashable, CustomStringConvertible {
    /// The line is not valid JSON.
    case invalidJSON(reason: String)
    /// The line is JSON but not an object.
    case notAnObject(found: String)
    /// The line's bytes are not UTF-8 (`column` is the 1-based byte offset of the first bad byte).
    case invalidUTF8(column: Int)
    /// The line is longer than `ReaderOptions.maxLineBytes`.
    case lineTooLong(bytes: Int, limit: Int)
    /// The file holds no record (empty, or only blank lines).
    case emptyFile
    /// The object has none of the keys of a known format.
    case unknownFormat(keys: [String])
    /// A field the format needs is absent.
    case missingField(field: String, format: RecordFormat)
    /// A field has the wrong JSON type.
    case wrongType(field: String, expected: String, found: String)
    /// A field that must hold text is empty (a completion, an output, an assistant message, a text).
    case emptyField(field: String)
    /// A chat message's role is not system, user or assistant.
    case unknownRole(role: String, field: String)
    /// A chat record has no assistant message, so nothing in it would carry loss.
    case noAssistantMessage
    /// The chat template raised an error for this conversation (its own `raise_exception`).
    case templateRejected(message: String)
    /// Rendering failed for another reason (an undefined variable, a type error in the template).
    case templateFailed(message: String)
    /// The rendered text does not show assistant message `index` in a way its tokens can be found.
    case assistantNotFound(index: Int, reason: String)
    /// Longer than the maximum sequence length under `LengthPolicy.error`.
    case tooLong(tokens: Int, limit: Int)
    /// The token ids do not spell the rendered text byte for byte (a tokenizer that rewrites text).
    case tokenOffsetsMismatch(textBytes: Int, tokenBytes: Int)

    /// A short stable name, for counting problems by kind ("invalid_json", "missing_field", ...).
    public var kind: String {
        switch self {
        case .invalidJSON: return "invalid_json"
        case .notAnObject: return "not_an_object"
        case .invalidUTF8: return "invalid_utf8"
        case .lineTooLong: return "line_too_long"
        case .emptyFile: return "empty_file"
        case .unknownFormat: return "unknown_format"
        case .missingField: return "missing_field"
        case .wrongType: return "wrong_type"
        case .emptyField: return "empty_field"
        case .unknownRole: return "unknown_role"
        case .noAssistantMessage: return "no_assistant_message"
        case .templateRejected: return "template_rejected"
        case .templateFailed: return "template_failed"
        case .assistantNotFound: return "assistant_not_found"
        case .tooLong: return "too_long"
        case .tokenOffsetsMismatch: return "token_offsets_mismatch"
        }
    }

    public var description: String {
        switch self {
        case .invalidJSON(let reason):
            return "invalid JSON: \(reason); expected one JSON object per line"
        case .notAnObject(let found):
            return "expected a JSON object, found \(found)"
        case .invalidUTF8(let column):
            return "invalid UTF-8 at byte \(column) of the line; HINT: re-encode the file as UTF-8 (iconv -f LATIN1 -t UTF-8)"
        case .lineTooLong(let bytes, let limit):
            return "line of \(bytes) bytes is over the limit of \(limit); HINT: raise data.max_line_bytes if such records are intended"
        case .emptyFile:
            return "no records: the file is empty or holds only blank lines"
        case .unknownFormat(let keys):
            let shown = keys.isEmpty ? "no keys" : "keys " + keys.map { "\"\($0)\"" }.joined(separator: ", ")
            return "record has \(shown); expected one of text {\"text\"}, prompt_completion {\"prompt\", \"completion\"}, "
                + "chat {\"messages\"}, instruction {\"instruction\", \"output\"}; HINT: map other names with "
                + "data.columns (e.g. question: prompt)"
        case .missingField(let field, let format):
            return "missing field \"\(field)\": this file's records are \(format), like \(format.example); HINT: one "
                + "format per file, set by data.format (--format) or detected from the file's first record"
        case .wrongType(let field, let expected, let found):
            return "field \"\(field)\" is \(found); expected \(expected)"
        case .emptyField(let field):
            return "field \"\(field)\" is empty; expected text to train on"
        case .unknownRole(let role, let field):
            return "\(field) is \"\(role)\"; expected one of \(ChatTurn.roles.sorted().map { "\"\($0)\"" }.joined(separator: ", ")) (HINT: map other names with data.roles, e.g. human: user)"
        case .noAssistantMessage:
            return "conversation has no assistant message, so no token would carry loss; HINT: set data.train_on_inputs: true to train on it, or data.on_error: skip to leave such records out"
        case .templateRejected(let message):
            return "the chat template rejected the conversation: \(message)"
        case .templateFailed(let message):
            return "rendering the chat template failed: \(message)"
        case .assistantNotFound(let index, let reason):
            return "cannot find assistant message \(index) in the rendered text (\(reason)); HINT: the template rewrites "
                + "assistant content, so loss spans cannot be located; set data.train_on_inputs: true or use another template (data.chat_template)"
        case .tooLong(let tokens, let limit):
            return "\(tokens) tokens, over data.max_seq_len \(limit); HINT: set data.over_length to truncate or drop (--over-length for the data commands)"
        case .tokenOffsetsMismatch(let textBytes, let tokenBytes):
            return "the tokens spell \(tokenBytes) bytes but the text has \(textBytes); the tokenizer rewrites text, so loss spans cannot be aligned"
        }
    }
}

/// A bad record: where it is and what is wrong.
public struct RecordError: Error, Sendable, Hashable, CustomStringConvertible {
    public let location: RecordLocation
    public let problem: RecordProblem

    public init(_ location: RecordLocation, _ problem: RecordProblem) {
        self.location = location
        self.problem = problem
    }

    public var description: String { "\(location): \(problem)" }
}

/// What to do with a bad record.
public enum ErrorPolicy: String, Sendable, Codable, CaseIterable {
    /// Stop at the first bad record, throwing its `RecordError`.
    case fail
    /// Skip bad records, counting each by kind and keeping the first few for the report.
    case skip
}

/// What to do with an example longer than the maximum sequence length.
public enum LengthPolicy: String, Sendable, Codable, CaseIterable {
    /// Keep the first `maxSeqLen` tokens.
    case truncate
    /// Leave the example out (counted).
    case drop
    /// Treat it as a bad record (`RecordProblem.tooLong`).
    case error
}

/// A file that cannot be read at all.
public enum DataFileError: Error, Sendable, CustomStringConvertible {
    case cannotOpen(file: String, reason: String)
    case gzip(file: String, reason: String)
    /// The data holds chat or instruction records but there is no chat template to render them.
    case noChatTemplate(format: RecordFormat, location: RecordLocation)
    case cannotWrite(file: String, reason: String)

    public var description: String {
        switch self {
        case .cannotOpen(let f, let r): return "\(f): cannot open (\(r))"
        case .gzip(let f, let r): return "\(f): cannot decompress (\(r)); HINT: check the file with gzip -t"
        case .noChatTemplate(let format, let location):
            return "\(location): \(format) records are rendered with a chat template, but the model has none; "
                + "HINT: set data.chat_template (--chat-template FILE for the data commands and eval) to a .jinja file or a tokenizer_config.json"
        case .cannotWrite(let f, let r): return "\(f): cannot write (\(r))"
        }
    }
}
