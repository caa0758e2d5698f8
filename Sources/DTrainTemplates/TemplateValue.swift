/// A JSON-shaped value handed to a chat template: extra message fields (tool calls), tool schemas,
/// or extra template variables such as `date_string`.
///
/// Objects keep their keys in insertion order, as a Python dict does, because `tojson`, `items`
/// and `for key in mapping` expose that order in the rendered text.
public enum TemplateValue: Sendable, Equatable {
    /// Python's `None` (renders as `None`, `tojson` gives `null`).
    case null
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([TemplateValue])
    /// Key/value pairs in insertion order; a later duplicate key replaces the earlier value.
    case object([Entry])

    /// One key/value pair of an `object`.
    public struct Entry: Sendable, Equatable {
        public var key: String
        public var value: TemplateValue

        public init(key: String, value: TemplateValue) {
            self.key = key
            self.value = value
        }
    }
}

extension TemplateValue: ExpressibleByNilLiteral, ExpressibleByBooleanLiteral, ExpressibleByIntegerLiteral,
    ExpressibleByFloatLiteral, ExpressibleByStringLiteral, ExpressibleByArrayLiteral,
    ExpressibleByDictionaryLiteral
{
    public init(nilLiteral: ()) { self = .null }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(integerLiteral value: Int) { self = .int(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(stringLiteral value: String) { self = .string(value) }
    public init(arrayLiteral elements: TemplateValue...) { self = .array(elements) }
    /// Keeps the literal's key order (`["name": "f", "arguments": [...]]`).
    public init(dictionaryLiteral elements: (String, TemplateValue)...) {
        self = .object(elements.map { Entry(key: $0.0, value: $0.1) })
    }
}

/// One turn of a conversation, as a chat template sees it (`message['role']`, `message.content`, ...).
///
/// The template receives a mapping with `role`, then `content` when it is not nil, then the `extra`
/// fields in sorted key order. As in transformers, keys whose value is nil / `.null` are left out,
/// so `message.content is defined` is false for a message without content.
public struct ChatMessage: Sendable, Equatable {
    /// `system`, `user`, `assistant`, `tool`, ...
    public var role: String
    /// The message text; nil leaves the `content` key out of the mapping.
    public var content: String?
    /// Other fields, such as `tool_calls` (an array of objects) or `name`.
    public var extra: [String: TemplateValue]

    public init(role: String, content: String?, extra: [String: TemplateValue] = [:]) {
        self.role = role
        self.content = content
        self.extra = extra
    }
}
