/// One lexical token of a template.
enum TokenKind: Equatable {
    /// Literal template text, already trimmed by whitespace control, trim_blocks and lstrip_blocks.
    case text(String)
    case variableBegin, variableEnd, blockBegin, blockEnd
    case name(String)
    case string(String)
    case integer(Int)
    case float(Double)
    /// An operator or punctuation mark: `+`, `//`, `==`, `(`, `.`, `|`, ...
    case op(String)
    case eof
}

/// A token and where it starts (an index into the normalised source's code points).
struct Token {
    var kind: TokenKind
    var offset: Int
}

/// Maps code-point offsets of the normalised source to 1-based line and column.
struct SourceMap: Sendable {
    private let lineStarts: [Int]

    init(_ scalars: [Unicode.Scalar]) {
        var starts = [0]
        for (i, c) in scalars.enumerated() where c == "\n" { starts.append(i + 1) }
        lineStarts = starts
    }

    func location(_ offset: Int) -> SourceLocation {
        var lo = 0, hi = lineStarts.count - 1
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if lineStarts[mid] <= offset { lo = mid } else { hi = mid - 1 }
        }
        return SourceLocation(line: lo + 1, column: offset - lineStarts[lo] + 1)
    }
}

/// Splits a template into tokens the way jinja2's lexer does with `trim_blocks=True` and
/// `lstrip_blocks=True` (the environment transformers renders chat templates in):
///
/// - `\r\n` and `\r` become `\n`, and one trailing newline of the template is dropped
///   (`keep_trailing_newline=False`).
/// - `{%-`, `{{-`, `{#-` strip all Python whitespace before the tag; `-%}`, `-}}`, `-#}` strip all
///   whitespace after it.
/// - trim_blocks: a block or comment tag ending in plain `%}` / `#}` swallows one `\n` right after it
///   (`+%}` keeps it). Variable tags `}}` never do.
/// - lstrip_blocks: whitespace between the start of a line and a block or comment tag is removed
///   (`{%+` keeps it). jinja2 3.1 tests that text with `\s+`, so besides spaces and tabs it also
///   removes NBSP, U+3000, `\v` and the other Python whitespace. "Start of a line" means after a `\n` in the text, or, when the text
///   holds no newline, that the previous tag's own match ended with a newline (or this is the start
///   of the template).
struct TemplateLexer {
    let source: [Unicode.Scalar]
    let map: SourceMap
    private var tokens: [Token] = []
    /// Whether the last lexer match ended in a newline (jinja2's `line_starting`).
    private var lineStarting = true

    init(template: String) {
        var scalars: [Unicode.Scalar] = []
        scalars.reserveCapacity(template.unicodeScalars.count)
        var previousWasCR = false
        for c in template.unicodeScalars {
            if c == "\r" {
                scalars.append("\n")
                previousWasCR = true
                continue
            }
            if c == "\n" && previousWasCR {
                previousWasCR = false
                continue
            }
            previousWasCR = false
            scalars.append(c)
        }
        if scalars.last == "\n" { scalars.removeLast() }
        source = scalars
        map = SourceMap(scalars)
    }

    private func at(_ i: Int) -> Unicode.Scalar? { i < source.count ? source[i] : nil }

    private func matches(_ text: String, at i: Int) -> Bool {
        var j = i
        for c in text.unicodeScalars {
            guard j < source.count, source[j] == c else { return false }
            j += 1
        }
        return true
    }

    private func error(_ message: String, at offset: Int) -> ChatTemplateError {
        map.location(offset).syntax(message)
    }

    /// Tokenizes the whole template; the last token is `.eof`.
    mutating func tokenize() throws -> [Token] {
        var pos = 0
        let n = source.count
        while pos < n {
            guard let start = nextTagStart(from: pos) else {
                emitText(from: pos, to: n)
                break
            }
            let kind = source[start + 1]
            var p = start + 2
            var sign: Unicode.Scalar?
            if let c = at(p), c == "-" || c == "+" {
                sign = c
                p += 1
            }
            let rawEnd = kind == "%" ? matchRawBegin(at: p) : nil

            // Whitespace control on the text before the tag.
            var textEnd = start
            if sign == "-" {
                while textEnd > pos && PythonText.isWhitespace(source[textEnd - 1]) { textEnd -= 1 }
            } else if sign != "+" && kind != "{" {
                var lineStart = pos
                var sawNewline = false
                var i = start - 1
                while i >= pos {
                    if source[i] == "\n" {
                        lineStart = i + 1
                        sawNewline = true
                        break
                    }
                    i -= 1
                }
                if sawNewline || lineStarting {
                    var onlyBlanks = true
                    for j in lineStart..<start where !PythonText.isWhitespace(source[j]) {
                        onlyBlanks = false
                        break
                    }
                    if onlyBlanks { textEnd = lineStart }
                }
            }
            emitText(from: pos, to: textEnd)
            lineStarting = false

            switch kind {
            case "#":
                pos = try lexComment(from: p, openedAt: start)
            case "{":
                tokens.append(Token(kind: .variableBegin, offset: start))
                pos = try lexTag(from: p, openedAt: start, isBlock: false)
            default:
                if let rawEnd {
                    lineStarting = source[rawEnd - 1] == "\n"
                    pos = try lexRaw(from: rawEnd, openedAt: start)
                } else {
                    tokens.append(Token(kind: .blockBegin, offset: start))
                    pos = try lexTag(from: p, openedAt: start, isBlock: true)
                }
            }
        }
        tokens.append(Token(kind: .eof, offset: n))
        return tokens
    }

    private mutating func emitText(from a: Int, to b: Int) {
        guard a < b else { return }
        tokens.append(Token(kind: .text(makeString(source[a..<b])), offset: a))
    }

    private func nextTagStart(from pos: Int) -> Int? {
        var i = pos
        let n = source.count
        while i + 1 < n {
            if source[i] == "{" {
                let c = source[i + 1]
                if c == "{" || c == "%" || c == "#" { return i }
            }
            i += 1
        }
        return nil
    }

    private func skipWhitespace(from i: Int) -> Int {
        var j = i
        while j < source.count && PythonText.isWhitespace(source[j]) { j += 1 }
        return j
    }

    /// `\s*raw\s*(-%}\s*|%})` after `{%` and its sign; returns the offset after the match.
    private func matchRawBegin(at p: Int) -> Int? {
        var i = skipWhitespace(from: p)
        guard matches("raw", at: i) else { return nil }
        i = skipWhitespace(from: i + 3)
        if matches("-%}", at: i) { return skipWhitespace(from: i + 3) }
        if matches("%}", at: i) { return i + 2 }
        return nil
    }

    /// Sets `lineStarting` from a tag end spanning `a..<b` and returns `b`.
    private mutating func endMatch(_ a: Int, _ b: Int) -> Int {
        lineStarting = b > a && source[b - 1] == "\n"
        return b
    }

    private mutating func lexComment(from p: Int, openedAt start: Int) throws -> Int {
        var j = p
        let n = source.count
        while j < n {
            if source[j] == "+" && matches("#}", at: j + 1) { return endMatch(j, j + 3) }
            if source[j] == "-" && matches("#}", at: j + 1) { return endMatch(j, skipWhitespace(from: j + 3)) }
            if matches("#}", at: j) {
                var e = j + 2
                if at(e) == "\n" { e += 1 }
                return endMatch(j, e)
            }
            j += 1
        }
        throw error("missing end of comment tag (a '{#' without '#}')", at: start)
    }

    /// The body of `{% raw %}...{% endraw %}`, emitted as text.
    private mutating func lexRaw(from p: Int, openedAt start: Int) throws -> Int {
        var j = p
        let n = source.count
        while j + 1 < n {
            if source[j] == "{" && source[j + 1] == "%" {
                var i = j + 2
                var sign: Unicode.Scalar?
                if let c = at(i), c == "-" || c == "+" {
                    sign = c
                    i += 1
                }
                i = skipWhitespace(from: i)
                if matches("endraw", at: i) {
                    i = skipWhitespace(from: i + 6)
                    var end: Int?
                    if matches("+%}", at: i) {
                        end = i + 3
                    } else if matches("-%}", at: i) {
                        end = skipWhitespace(from: i + 3)
                    } else if matches("%}", at: i) {
                        end = i + 2
                        if at(i + 2) == "\n" { end = i + 3 }
                    }
                    if let end {
                        var textEnd = j
                        if sign == "-" {
                            while textEnd > p && PythonText.isWhitespace(source[textEnd - 1]) { textEnd -= 1 }
                        } else if sign != "+" {
                            var lineStart = p
                            var sawNewline = false
                            var k = j - 1
                            while k >= p {
                                if source[k] == "\n" {
                                    lineStart = k + 1
                                    sawNewline = true
                                    break
                                }
                                k -= 1
                            }
                            if (sawNewline || lineStarting)
                                && source[lineStart..<j].allSatisfy(PythonText.isWhitespace)
                            {
                                textEnd = lineStart
                            }
                        }
                        emitText(from: p, to: textEnd)
                        return endMatch(j, end)
                    }
                }
            }
            j += 1
        }
        throw error("missing end of raw directive (a '{% raw %}' without '{% endraw %}')", at: start)
    }

    /// Tokens inside `{{ ... }}` or `{% ... %}`, up to and including the closing delimiter.
    private mutating func lexTag(from p: Int, openedAt start: Int, isBlock: Bool) throws -> Int {
        var i = p
        let n = source.count
        var brackets: [Unicode.Scalar] = []
        while true {
            guard i < n else {
                throw error("unexpected end of template: the tag opened here is never closed with "
                            + (isBlock ? "'%}'" : "'}}'"), at: start)
            }
            if brackets.isEmpty {
                if isBlock {
                    if source[i] == "+" && matches("%}", at: i + 1) {
                        tokens.append(Token(kind: .blockEnd, offset: i))
                        return endMatch(i, i + 3)
                    }
                    if source[i] == "-" && matches("%}", at: i + 1) {
                        tokens.append(Token(kind: .blockEnd, offset: i))
                        return endMatch(i, skipWhitespace(from: i + 3))
                    }
                    if matches("%}", at: i) {
                        tokens.append(Token(kind: .blockEnd, offset: i))
                        return endMatch(i, at(i + 2) == "\n" ? i + 3 : i + 2)
                    }
                } else {
                    if source[i] == "-" && matches("}}", at: i + 1) {
                        tokens.append(Token(kind: .variableEnd, offset: i))
                        return endMatch(i, skipWhitespace(from: i + 3))
                    }
                    if matches("}}", at: i) {
                        tokens.append(Token(kind: .variableEnd, offset: i))
                        return endMatch(i, i + 2)
                    }
                }
            }
            let c = source[i]
            if PythonText.isWhitespace(c) {
                i = skipWhitespace(from: i)
                continue
            }
            if isDigit(i) {
                i = try lexNumber(at: i)
                continue
            }
            if c == "_" || c.properties.isAlphabetic {
                var j = i + 1
                while j < n, source[j] == "_" || source[j].properties.isAlphabetic
                        || (source[j].properties.numericType == .decimal) {
                    j += 1
                }
                tokens.append(Token(kind: .name(makeString(source[i..<j])), offset: i))
                i = j
                continue
            }
            if c == "'" || c == "\"" {
                i = try lexString(at: i)
                continue
            }
            // Operators, longest first.
            var op: String?
            for two in ["//", "**", "==", "!=", ">=", "<="] where matches(two, at: i) {
                op = two
                break
            }
            if op == nil, "+-/*%~[](){}><=.:|,;".unicodeScalars.contains(c) { op = String(c) }
            guard let op else {
                throw error("unexpected character '\(c)' inside a tag", at: i)
            }
            switch op {
            case "(": brackets.append(")")
            case "[": brackets.append("]")
            case "{": brackets.append("}")
            case ")", "]", "}":
                guard let expected = brackets.popLast() else {
                    throw error("unexpected '\(op)'", at: i)
                }
                if String(expected) != op {
                    throw error("unexpected '\(op)', expected '\(expected)'", at: i)
                }
            default: break
            }
            tokens.append(Token(kind: .op(op), offset: i))
            i += op.unicodeScalars.count
        }
    }

    private func isDigit(_ i: Int) -> Bool {
        guard let c = at(i) else { return false }
        return c.value >= 0x30 && c.value <= 0x39
    }

    /// `(\d+_)*\d+` starting at a digit; returns the end offset.
    private func digitRun(from i: Int) -> Int {
        var j = i
        while isDigit(j) {
            j += 1
            if at(j) == "_" && isDigit(j + 1) { j += 1 }
        }
        return j
    }

    private mutating func lexNumber(at i: Int) throws -> Int {
        // Hexadecimal, octal and binary integers.
        if source[i] == "0", let p = at(i + 1), "xXoObB".unicodeScalars.contains(p) {
            let radix = (p == "x" || p == "X") ? 16 : (p == "o" || p == "O") ? 8 : 2
            var j = i + 2
            var digits = ""
            while let c = at(j), c == "_" || Int(String(c), radix: radix) != nil {
                if c != "_" { digits.unicodeScalars.append(c) }
                j += 1
            }
            guard let value = Int(digits, radix: radix) else {
                throw error("invalid integer literal", at: i)
            }
            tokens.append(Token(kind: .integer(value), offset: i))
            return j
        }
        var j = digitRun(from: i)
        var isFloat = false
        let afterDot = i > 0 && source[i - 1] == "."
        if !afterDot {
            var k = j
            if at(k) == ".", isDigit(k + 1) {
                k = digitRun(from: k + 1)
                isFloat = true
            }
            if let e = at(k), e == "e" || e == "E" {
                var m = k + 1
                if let s = at(m), s == "+" || s == "-" { m += 1 }
                if isDigit(m) {
                    k = digitRun(from: m)
                    isFloat = true
                }
            }
            if isFloat { j = k }
        }
        let text = makeString(source[i..<j].filter { $0 != "_" })
        if isFloat {
            guard let value = Double(text) else { throw error("invalid number '\(text)'", at: i) }
            tokens.append(Token(kind: .float(value), offset: i))
        } else {
            guard let value = Int(text) else {
                throw map.location(i).unsupported("integer literal \(text) (larger than 64 bits)")
            }
            tokens.append(Token(kind: .integer(value), offset: i))
        }
        return j
    }

    /// A quoted string literal; escapes are decoded as Python's `unicode-escape` codec does
    /// (jinja2 decodes them that way), unknown escapes keep their backslash.
    private mutating func lexString(at i: Int) throws -> Int {
        let quote = source[i]
        var j = i + 1
        var body: [Unicode.Scalar] = []
        while true {
            guard let c = at(j) else { throw error("unterminated string literal", at: i) }
            if c == quote { break }
            if c == "\\" {
                guard let d = at(j + 1) else { throw error("unterminated string literal", at: i) }
                body.append(c)
                body.append(d)
                j += 2
                continue
            }
            body.append(c)
            j += 1
        }
        let value = try decodeEscapes(body, at: i)
        tokens.append(Token(kind: .string(value), offset: i))
        return j + 1
    }

    private func decodeEscapes(_ body: [Unicode.Scalar], at offset: Int) throws -> String {
        var out = String.UnicodeScalarView()
        var k = 0
        /// `count` hex digits after the escape letter at `k`.
        func hex(_ count: Int) throws -> Unicode.Scalar {
            let truncated = error("truncated \\x, \\u or \\U escape in a string literal", at: offset)
            guard k + count < body.count else { throw truncated }
            var v: UInt32 = 0
            for m in 1...count {
                guard let d = UInt32(String(body[k + m]), radix: 16) else { throw truncated }
                v = v * 16 + d
            }
            guard let s = Unicode.Scalar(v) else {
                throw error("escape value \(String(v, radix: 16)) is not a valid code point", at: offset)
            }
            k += count + 1
            return s
        }
        while k < body.count {
            let c = body[k]
            guard c == "\\", k + 1 < body.count else {
                out.append(c)
                k += 1
                continue
            }
            let d = body[k + 1]
            k += 1  // now at the escape letter
            switch d {
            case "\n": k += 1
            case "\\", "'", "\"": out.append(d); k += 1
            case "a": out.append("\u{07}"); k += 1
            case "b": out.append("\u{08}"); k += 1
            case "f": out.append("\u{0C}"); k += 1
            case "n": out.append("\n"); k += 1
            case "r": out.append("\r"); k += 1
            case "t": out.append("\t"); k += 1
            case "v": out.append("\u{0B}"); k += 1
            case "x": out.append(try hex(2))
            case "u": out.append(try hex(4))
            case "U": out.append(try hex(8))
            case "0"..."7":
                var v: UInt32 = 0
                var m = 0
                while m < 3, k < body.count, ("0"..."7").contains(body[k]) {
                    v = v * 8 + (body[k].value - 0x30)
                    k += 1
                    m += 1
                }
                out.append(Unicode.Scalar(v)!)
            case "N":
                throw map.location(offset).unsupported("\\N{...} escape in a string literal")
            default:
                out.append("\\")
                if d.isASCII {
                    out.append(d)
                } else {
                    // jinja2 first turns non-ASCII characters into \x.., \u.... or \U........ text,
                    // so a backslash before one escapes that text's backslash instead.
                    let v = d.value
                    let spelled = v < 0x100 ? "x" + pad(v, 2) : v < 0x10000 ? "u" + pad(v, 4) : "U" + pad(v, 8)
                    out.append(contentsOf: spelled.unicodeScalars)
                }
                k += 1
            }
        }
        return String(out)
    }

    private func pad(_ v: UInt32, _ width: Int) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: max(0, width - s.count)) + s
    }
}

/// A String made of the given code points.
func makeString<S: Sequence>(_ scalars: S) -> String where S.Element == Unicode.Scalar {
    var view = String.UnicodeScalarView()
    view.append(contentsOf: scalars)
    return String(view)
}
