// A chat template bound to the special-token strings it is rendered with, and where it came from:
// the model's own template, a `.jinja` file, or a Hugging Face `tokenizer_config.json` (whose
// `chat_template`, `bos_token` and `eos_token` are then used together).

import DTrainTemplates
import DTrainCore
import Foundation

/// A chat template ready to render: the compiled template and the `bos_token` / `eos_token`
/// strings it receives (nil: undefined in the template, rendering as "").
public struct ChatTemplateContext {
    public let template: ChatTemplate
    public let bosToken: String?
    public let eosToken: String?
    /// Where the template came from, for messages ("model.gguf", "chat.jinja").
    public let origin: String

    public init(template: ChatTemplate, bosToken: String?, eosToken: String?, origin: String) {
        self.template = template
        self.bosToken = bosToken
        self.eosToken = eosToken
        self.origin = origin
    }

    /// Compiles `source`.
    public init(source: String, bosToken: String?, eosToken: String?, origin: String) throws {
        let template: ChatTemplate
        do {
            template = try ChatTemplate(source: source)
        } catch {
            throw ChatTemplateFileError.invalidTemplate(origin: origin, reason: "\(error)")
        }
        self.init(template: template, bosToken: bosToken, eosToken: eosToken, origin: origin)
    }

    /// Reads a template file: a `.jinja` (or any file that is not a JSON object) is the template
    /// itself, rendered with `defaultBOS` / `defaultEOS` (the model's); a JSON object is a `tokenizer_config.json`,
    /// whose `chat_template` is used with its own `bos_token` and `eos_token` when it has those
    /// keys (a null value means the model has none).
    public static func load(file path: String, defaultBOS: String?, defaultEOS: String?) throws -> ChatTemplateContext {
        let data: Data
        do { data = try FileOperation.read(path, mapped: false) } catch let error as FileError {
            throw ChatTemplateFileError.cannotRead(file: path, reason: error.cause)
        }
        // A .json file, or any file that parses as a JSON object, is a tokenizer_config.json;
        // anything else is the template itself ("{%" or "{{" does not parse as JSON).
        guard let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            if path.hasSuffix(".json") {
                throw ChatTemplateFileError.cannotRead(file: path, reason: "not a JSON object (expected a tokenizer_config.json)")
            }
            guard let source = String(data: data, encoding: .utf8) else {
                throw ChatTemplateFileError.cannotRead(file: path, reason: "not UTF-8 text")
            }
            return try ChatTemplateContext(source: source, bosToken: defaultBOS, eosToken: defaultEOS, origin: path)
        }
        guard let source = TokenizerConfigJSON.chatTemplate(object) else { throw ChatTemplateFileError.noTemplate(file: path) }
        return try ChatTemplateContext(source: source, bosToken: TokenizerConfigJSON.token(object, "bos_token", default: defaultBOS),
                                       eosToken: TokenizerConfigJSON.token(object, "eos_token", default: defaultEOS), origin: path)
    }

    /// Renders `turns`; a template error becomes the record's problem.
    public func render(_ turns: [ChatTurn], addGenerationPrompt: Bool) throws -> String {
        let messages = turns.map { turn in
            ChatMessage(role: turn.role, content: turn.contentIsNull ? nil : turn.content,
                        extra: Dictionary(turn.extra.map { ($0.key, Self.templateValue($0.value)) }) { _, last in last })
        }
        do {
            return try template.render(messages: messages, addGenerationPrompt: addGenerationPrompt,
                                       bosToken: bosToken, eosToken: eosToken)
        } catch let error as ChatTemplateError {
            if case .raised(let message) = error { throw RecordProblem.templateRejected(message: message) }
            throw RecordProblem.templateFailed(message: "\(error)")
        } catch {
            throw RecordProblem.templateFailed(message: "\(error)")
        }
    }
}

extension ChatTemplateContext {
    /// A record's JSON as the template sees it (whole numbers as integers, as Python's json does).
    static func templateValue(_ json: RecordJSON) -> TemplateValue {
        switch json {
        case .string(let s): return .string(s)
        case .number(let d): return d == d.rounded() && abs(d) < 9.0e15 ? .int(Int(d)) : .double(d)
        case .bool(let b): return .bool(b)
        case .null: return .null
        case .array(let items): return .array(items.map(templateValue))
        case .object(let members): return .object(members.map { TemplateValue.Entry(key: $0.key, value: templateValue($0.value)) })
        }
    }
}

/// A chat template file that cannot be used.
public enum ChatTemplateFileError: Error, CustomStringConvertible {
    case cannotRead(file: String, reason: String)
    /// A tokenizer_config.json without a `chat_template`.
    case noTemplate(file: String)
    case invalidTemplate(origin: String, reason: String)

    public var description: String {
        switch self {
        case .cannotRead(let f, let r): return "\(f): cannot read the chat template (\(r))"
        case .noTemplate(let f):
            return "\(f): no \"chat_template\" key; HINT: pass the model's tokenizer_config.json or a .jinja file"
        case .invalidTemplate(let origin, let r): return "\(origin): the chat template does not compile: \(r)"
        }
    }
}

/// The fields of a Hugging Face `tokenizer_config.json` that dtrain reads, parsed one way for
/// the model loader and for a template override alike.
public enum TokenizerConfigJSON {
    /// Its `chat_template`: a string, or of several named templates "default", else the first.
    public static func chatTemplate(_ object: [String: Any]) -> String? {
        switch object["chat_template"] {
        case let s as String: return s
        case let list as [[String: Any]]: return (list.first { $0["name"] as? String == "default" } ?? list.first)?["template"] as? String
        default: return nil
        }
    }

    /// A special token's string (`bos_token`, `eos_token`, `pad_token`, `unk_token`): a string
    /// or an added-token object's `content`; `fallback` when the key is absent, nil when it is
    /// null (the model has none).
    public static func token(_ object: [String: Any], _ key: String, default fallback: String?) -> String? {
        guard let value = object[key] else { return fallback }
        if let s = value as? String { return s }
        if let added = value as? [String: Any] { return added["content"] as? String }
        return nil
    }
}
