/// A Hugging Face chat template (the Jinja `chat_template` of tokenizer_config.json or the GGUF
/// field `tokenizer.chat_template`), parsed once and rendered like transformers'
/// `tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=...)`.
///
/// The renderer is a Jinja subset interpreter with the environment transformers uses
/// (`ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)` with `loopcontrols`):
/// `for` (with `loop.*`, `else`, filters, `break`/`continue`), `if`/`elif`/`else`, `set` (also
/// `namespace()` attributes and block form), `raw`, `generation`, the usual expressions, filters
/// and tests, Python `str`/`dict` methods, and the globals `raise_exception`, `strftime_now`,
/// `range`, `namespace`, `dict`. Macros, `call`, `include` and other constructs no reference
/// template needs are rejected at parse time with `ChatTemplateError.unsupported`.
///
/// ```swift
/// let template = try ChatTemplate(source: chatTemplateString)
/// let text = try template.render(messages: [ChatMessage(role: "user", content: "Hi")],
///                                addGenerationPrompt: true, bosToken: "<s>", eosToken: "</s>")
/// ```
public struct ChatTemplate: Sendable {
    /// The template text as given.
    public let source: String
    private let body: [Statement]

    /// Parses `source`; throws `ChatTemplateError.syntax` or `.unsupported` naming line and column.
    public init(source: String) throws {
        self.source = source
        var lexer = TemplateLexer(template: source)
        let tokens = try lexer.tokenize()
        var parser = TemplateParser(tokens: tokens, map: lexer.map)
        body = try parser.parseTemplate()
    }

    /// Renders a conversation with the variables transformers passes: `messages`,
    /// `add_generation_prompt`, `bos_token` / `eos_token` (left undefined when nil, as for a
    /// tokenizer without that token), `tools = None` and `documents = None`. `extraVariables` are
    /// added last and override any of those (e.g. `tools`, `date_string`, `custom_tools`).
    ///
    /// Throws `ChatTemplateError.raised` when the template calls `raise_exception(...)`, with the
    /// template's message unchanged.
    public func render(messages: [ChatMessage], addGenerationPrompt: Bool, bosToken: String?, eosToken: String?,
                       extraVariables: [String: TemplateValue] = [:]) throws -> String {
        var variables: [String: Value] = [:]
        variables["messages"] = .list(messages.map(Self.mapping))
        variables["add_generation_prompt"] = .bool(addGenerationPrompt)
        variables["tools"] = Value.none
        variables["documents"] = Value.none
        if let bosToken { variables["bos_token"] = .string(bosToken) }
        if let eosToken { variables["eos_token"] = .string(eosToken) }
        for (k, v) in extraVariables { variables[k] = Value(v) }
        return try run(variables)
    }

    /// Renders with exactly `variables` (plus the global functions), for templates that are not
    /// about a conversation, or to pass `messages` already built as `TemplateValue`s.
    public func render(variables: [String: TemplateValue]) throws -> String {
        try run(variables.mapValues(Value.init))
    }

    private func run(_ variables: [String: Value]) throws -> String {
        var globals: [String: Value] = [
            "range": .function(.range),
            "namespace": .function(.namespace),
            "dict": .function(.dict),
            "raise_exception": .function(.raiseException),
            "strftime_now": .function(.strftimeNow),
            "cycler": .function(.cycler),
            "joiner": .function(.joiner),
            "lipsum": .function(.lipsum),
        ]
        globals.merge(variables) { _, given in given }
        let renderer = TemplateRenderer(globals: globals)
        _ = try renderer.execute(body)
        return renderer.output
    }

    /// A message as the template sees it: `role`, `content` unless nil, then the extra fields in
    /// sorted key order, leaving out nil values (as transformers drops keys whose value is None).
    private static func mapping(_ message: ChatMessage) -> Value {
        var d = OrderedDict()
        d["role"] = .string(message.role)
        if let content = message.content { d["content"] = .string(content) }
        for key in message.extra.keys.sorted() {
            guard let value = message.extra[key], value != .null else { continue }
            d[key] = Value(value)
        }
        return .dict(d)
    }
}
