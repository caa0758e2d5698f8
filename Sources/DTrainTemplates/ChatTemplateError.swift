/// Why a chat template could not be parsed or rendered. Every case but `.raised` names the line
/// and column (1-based, counted in Unicode code points) of the template construct at fault.
public enum ChatTemplateError: Error, CustomStringConvertible, Equatable {
    /// The template called `raise_exception(message)`: the conversation breaks the template's own
    /// rules (roles that do not alternate, a role it does not know). `message` is the template's text,
    /// exactly as jinja2's `TemplateError` carries it.
    case raised(message: String)
    /// The template is not valid Jinja; jinja2 would reject it too.
    case syntax(message: String, line: Int, column: Int)
    /// Valid Jinja that this renderer does not implement: a tag, filter, test, method or function.
    /// `construct` names it, e.g. `filter 'wordcount'` or `tag 'macro'`.
    case unsupported(construct: String, line: Int, column: Int)
    /// Rendering failed the way jinja2's would: an undefined value used in arithmetic, a type
    /// mismatch, an index that is not an integer, ...
    case runtime(message: String, line: Int, column: Int)

    public var description: String {
        switch self {
        case .raised(let message):
            return "the chat template rejected the conversation: \(message). HINT: the template enforces "
                + "this; fix the conversation (roles, order) or choose a template that accepts it."
        case .syntax(let message, let line, let column):
            return "chat template syntax error at line \(line), column \(column): \(message). HINT: the "
                + "template must be valid Jinja2 (as in tokenizer_config.json's chat_template); check the "
                + "tag or expression there."
        case .unsupported(let construct, let line, let column):
            return "unsupported \(construct) at line \(line), column \(column); expected the Jinja subset "
                + "that Hugging Face chat templates use (for/if/set/namespace, the common filters, tests "
                + "and Python string methods). HINT: rewrite that part of the template, or implement it "
                + "in Sources/DTrainTemplates."
        case .runtime(let message, let line, let column):
            return "chat template error at line \(line), column \(column): \(message). HINT: check that "
                + "the messages and variables have the fields and types the template expects."
        }
    }
}

/// A 1-based position in the (newline-normalised) template source.
struct SourceLocation: Sendable, Equatable {
    var line: Int
    var column: Int

    func syntax(_ message: String) -> ChatTemplateError {
        .syntax(message: message, line: line, column: column)
    }

    func unsupported(_ construct: String) -> ChatTemplateError {
        .unsupported(construct: construct, line: line, column: column)
    }

    func runtime(_ message: String) -> ChatTemplateError {
        .runtime(message: message, line: line, column: column)
    }
}
