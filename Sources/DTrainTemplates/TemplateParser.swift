/// Builds the statement tree from tokens, following jinja2's grammar and its error cases.
struct TemplateParser {
    private let tokens: [Token]
    private let map: SourceMap
    private var index = 0
    /// How many `for` bodies enclose the current position (`break`/`continue` need one).
    private var loopDepth = 0

    /// Tags jinja2 knows that this renderer does not implement.
    private static let unsupportedTags: Set<String> = [
        "macro", "call", "filter", "with", "block", "extends", "include", "import", "from", "autoescape",
        "trans", "do", "print",
    ]

    init(tokens: [Token], map: SourceMap) {
        self.tokens = tokens
        self.map = map
    }

    /// Parses the whole template.
    mutating func parseTemplate() throws -> [Statement] {
        let (body, end) = try parseBody(until: [])
        if let end {
            throw location(of: tokens[index - 1]).syntax("unexpected '\(end)'")
        }
        return body
    }

    // MARK: - Token stream

    private var current: Token { tokens[index] }

    private func peek(_ k: Int = 1) -> Token { tokens[min(index + k, tokens.count - 1)] }

    private mutating func advance() { if index < tokens.count - 1 { index += 1 } }

    private func location(of token: Token) -> SourceLocation { map.location(token.offset) }

    private var here: SourceLocation { location(of: current) }

    private func isOp(_ op: String, _ token: Token? = nil) -> Bool {
        if case .op(let o) = (token ?? current).kind { return o == op }
        return false
    }

    private func isName(_ name: String, _ token: Token? = nil) -> Bool {
        if case .name(let n) = (token ?? current).kind { return n == name }
        return false
    }

    private func describe(_ token: Token) -> String {
        switch token.kind {
        case .text: return "template text"
        case .variableBegin: return "'{{'"
        case .variableEnd: return "end of print statement '}}'"
        case .blockBegin: return "'{%'"
        case .blockEnd: return "end of statement block '%}'"
        case .name(let n): return "'\(n)'"
        case .string: return "string literal"
        case .integer(let v): return "integer \(v)"
        case .float(let v): return "number \(v)"
        case .op(let o): return "'\(o)'"
        case .eof: return "end of template"
        }
    }

    private mutating func expectOp(_ op: String) throws {
        guard isOp(op) else { throw here.syntax("expected '\(op)', got \(describe(current))") }
        advance()
    }

    private mutating func expectName() throws -> String {
        guard case .name(let n) = current.kind else {
            throw here.syntax("expected a name, got \(describe(current))")
        }
        advance()
        return n
    }

    private mutating func expectBlockEnd() throws {
        guard current.kind == .blockEnd else {
            throw here.syntax("expected end of statement block '%}', got \(describe(current))")
        }
        advance()
    }

    // MARK: - Statements

    /// Statements up to a `{% name %}` tag whose name is in `ends`; the stream is left just after
    /// that name (the caller reads the rest of the tag). Returns the name found, nil at the end.
    private mutating func parseBody(until ends: Set<String>) throws -> ([Statement], String?) {
        var body: [Statement] = []
        while true {
            switch current.kind {
            case .eof:
                if !ends.isEmpty {
                    let expected = ends.sorted().map { "'\($0)'" }.joined(separator: " or ")
                    throw here.syntax("unexpected end of template; expected \(expected)")
                }
                return (body, nil)
            case .text(let t):
                body.append(.text(t))
                advance()
            case .variableBegin:
                advance()
                let e = try parseTuple()
                guard current.kind == .variableEnd else {
                    throw here.syntax("expected end of print statement '}}', got \(describe(current))")
                }
                advance()
                body.append(.output(e))
            case .blockBegin:
                advance()
                guard case .name(let tag) = current.kind else {
                    throw here.syntax("expected a tag name after '{%', got \(describe(current))")
                }
                if ends.contains(tag) {
                    advance()
                    return (body, tag)
                }
                body.append(contentsOf: try parseStatement(tag))
            default:
                throw here.syntax("unexpected \(describe(current))")
            }
        }
    }

    private mutating func parseStatement(_ tag: String) throws -> [Statement] {
        let loc = here
        switch tag {
        case "if":
            advance()
            return [try parseIf()]
        case "for":
            advance()
            return [try parseFor(loc)]
        case "set":
            advance()
            return [try parseSet(loc)]
        case "break", "continue":
            advance()
            guard loopDepth > 0 else { throw loc.syntax("'\(tag)' outside of a for loop") }
            try expectBlockEnd()
            return [tag == "break" ? .loopBreak : .loopContinue]
        case "generation":
            // transformers' AssistantTracker tag: renders its body unchanged.
            advance()
            try expectBlockEnd()
            let (body, _) = try parseBody(until: ["endgeneration"])
            try expectBlockEnd()
            return body
        default:
            if Self.unsupportedTags.contains(tag) { throw loc.unsupported("tag '\(tag)'") }
            if tag.hasPrefix("end") || tag == "else" || tag == "elif" {
                throw loc.syntax("unexpected '\(tag)' (no open block it could close)")
            }
            throw loc.syntax("unknown tag '\(tag)'")
        }
    }

    private mutating func parseIf() throws -> Statement {
        var branches: [(test: Expr, body: [Statement])] = []
        var otherwise: [Statement] = []
        while true {
            let test = try parseTuple(withCondexpr: false)
            try expectBlockEnd()
            let (body, end) = try parseBody(until: ["elif", "else", "endif"])
            branches.append((test, body))
            if end == "elif" { continue }
            if end == "else" {
                try expectBlockEnd()
                (otherwise, _) = try parseBody(until: ["endif"])
            }
            try expectBlockEnd()
            return .conditional(branches: branches, otherwise: otherwise)
        }
    }

    private mutating func parseFor(_ loc: SourceLocation) throws -> Statement {
        let target = try parseAssignTarget(withNamespace: false, extraEnds: ["in"])
        guard isName("in") else { throw here.syntax("expected 'in', got \(describe(current))") }
        advance()
        let iterable = try parseTuple(withCondexpr: false, extraEnds: ["recursive"])
        var condition: Expr?
        if isName("if") {
            advance()
            condition = try parseExpression()
        }
        if isName("recursive") { throw here.unsupported("recursive for loop") }
        try expectBlockEnd()
        loopDepth += 1
        let (body, end) = try parseBody(until: ["endfor", "else"])
        loopDepth -= 1
        var otherwise: [Statement] = []
        if end == "else" {
            try expectBlockEnd()
            (otherwise, _) = try parseBody(until: ["endfor"])
        }
        try expectBlockEnd()
        return .forLoop(ForLoop(target: target, iterable: iterable, condition: condition, body: body,
                                otherwise: otherwise, location: loc))
    }

    private mutating func parseSet(_ loc: SourceLocation) throws -> Statement {
        let target = try parseAssignTarget(withNamespace: true, extraEnds: [])
        if isOp("=") {
            advance()
            let value = try parseTuple()
            try expectBlockEnd()
            return .assign(target, value, loc)
        }
        var filters: [FilterCall] = []
        while isOp("|") {
            advance()
            filters.append(try parseFilterCall())
        }
        try expectBlockEnd()
        let (body, _) = try parseBody(until: ["endset"])
        try expectBlockEnd()
        return .assignBlock(target, filters, body, loc)
    }

    private mutating func parseAssignTarget(withNamespace: Bool, extraEnds: Set<String>) throws -> AssignTarget {
        if withNamespace, case .name(let ns) = current.kind, isOp(".", peek()) {
            advance()
            advance()
            let attr = try expectName()
            return .namespaceAttribute(ns, attr)
        }
        var items: [AssignTarget] = []
        var isTuple = false
        while true {
            if !items.isEmpty { try expectOp(",") }
            if isTupleEnd(extraEnds) || isOp("=") || isOp("|") { break }
            items.append(try parseTargetPrimary())
            if isOp(",") { isTuple = true } else { break }
        }
        if !isTuple {
            guard let single = items.first else {
                throw here.syntax("expected a name to assign to, got \(describe(current))")
            }
            return single
        }
        return .tuple(items)
    }

    private mutating func parseTargetPrimary() throws -> AssignTarget {
        if case .name(let n) = current.kind {
            advance()
            return .name(n)
        }
        if isOp("(") {
            advance()
            let inner = try parseAssignTarget(withNamespace: false, extraEnds: [])
            try expectOp(")")
            return inner
        }
        throw here.syntax("can't assign to \(describe(current))")
    }

    private func isTupleEnd(_ extraEnds: Set<String>) -> Bool {
        switch current.kind {
        case .variableEnd, .blockEnd, .eof: return true
        case .op(")"): return true
        case .name(let n): return extraEnds.contains(n)
        default: return false
        }
    }

    // MARK: - Expressions

    /// A comma-separated expression list; one element without a comma is that element.
    private mutating func parseTuple(withCondexpr: Bool = true, extraEnds: Set<String> = [],
                                     explicitParentheses: Bool = false) throws -> Expr {
        var items: [Expr] = []
        var isTuple = false
        let loc = here
        while true {
            if !items.isEmpty { try expectOp(",") }
            if isTupleEnd(extraEnds) { break }
            items.append(withCondexpr ? try parseExpression() : try parseOr())
            if isOp(",") { isTuple = true } else { break }
        }
        if !isTuple {
            if let single = items.first { return single }
            if !explicitParentheses {
                throw loc.syntax("expected an expression, got \(describe(current))")
            }
        }
        return .tuple(items)
    }

    private mutating func parseExpression() throws -> Expr {
        var expr = try parseOr()
        while isName("if") {
            advance()
            let test = try parseOr()
            var otherwise: Expr?
            if isName("else") {
                advance()
                otherwise = try parseExpression()
            }
            expr = .conditional(test: test, then: expr, otherwise: otherwise)
        }
        return expr
    }

    private mutating func parseOr() throws -> Expr {
        var left = try parseAnd()
        while isName("or") {
            advance()
            left = .or(left, try parseAnd())
        }
        return left
    }

    private mutating func parseAnd() throws -> Expr {
        var left = try parseNot()
        while isName("and") {
            advance()
            left = .and(left, try parseNot())
        }
        return left
    }

    private mutating func parseNot() throws -> Expr {
        if isName("not") {
            advance()
            return .not(try parseNot())
        }
        return try parseCompare()
    }

    private mutating func parseCompare() throws -> Expr {
        let loc = here
        let first = try parseMath1()
        var ops: [(op: CompareOperator, operand: Expr)] = []
        while true {
            if case .op(let o) = current.kind, let op = CompareOperator(rawValue: o), op != .contains {
                advance()
                ops.append((op, try parseMath1()))
            } else if isName("in") {
                advance()
                ops.append((.contains, try parseMath1()))
            } else if isName("not") && isName("in", peek()) {
                advance()
                advance()
                ops.append((.notContains, try parseMath1()))
            } else {
                break
            }
        }
        return ops.isEmpty ? first : .compare(first, ops, loc)
    }

    private mutating func parseMath1() throws -> Expr {
        var left = try parseConcat()
        while isOp("+") || isOp("-") {
            let loc = here
            let op: BinaryOperator = isOp("+") ? .add : .subtract
            advance()
            left = .binary(op, left, try parseConcat(), loc)
        }
        return left
    }

    private mutating func parseConcat() throws -> Expr {
        var items = [try parseMath2()]
        while isOp("~") {
            advance()
            items.append(try parseMath2())
        }
        return items.count == 1 ? items[0] : .concat(items)
    }

    private mutating func parseMath2() throws -> Expr {
        var left = try parsePow()
        while true {
            let loc = here
            let op: BinaryOperator
            if isOp("*") { op = .multiply } else if isOp("/") { op = .divide } else if isOp("//") {
                op = .floorDivide
            } else if isOp("%") { op = .modulo } else { break }
            advance()
            left = .binary(op, left, try parsePow(), loc)
        }
        return left
    }

    private mutating func parsePow() throws -> Expr {
        var left = try parseUnary()
        while isOp("**") {
            let loc = here
            advance()
            left = .binary(.power, left, try parseUnary(), loc)
        }
        return left
    }

    private mutating func parseUnary(withFilter: Bool = true) throws -> Expr {
        let loc = here
        var node: Expr
        if isOp("-") {
            advance()
            node = .unary(.negate, try parseUnary(withFilter: false), loc)
        } else if isOp("+") {
            advance()
            node = .unary(.plus, try parseUnary(withFilter: false), loc)
        } else {
            node = try parsePrimary()
        }
        node = try parsePostfix(node)
        if withFilter { node = try parseFilterExpression(node) }
        return node
    }

    private mutating func parsePrimary() throws -> Expr {
        let token = current
        let loc = location(of: token)
        switch token.kind {
        case .name(let n):
            advance()
            switch n {
            case "true", "True": return .constant(.bool(true))
            case "false", "False": return .constant(.bool(false))
            case "none", "None": return .constant(.none)
            default: return .name(n, loc)
            }
        case .string(let s):
            advance()
            var text = s
            // Adjacent string literals concatenate, as in Python.
            while case .string(let more) = current.kind {
                text += more
                advance()
            }
            return .constant(.string(text))
        case .integer(let v):
            advance()
            return .constant(.int(v))
        case .float(let v):
            advance()
            return .constant(.double(v))
        case .op("("):
            advance()
            let inner = try parseTuple(explicitParentheses: true)
            try expectOp(")")
            return inner
        case .op("["):
            advance()
            var items: [Expr] = []
            while !isOp("]") {
                if !items.isEmpty {
                    try expectOp(",")
                    if isOp("]") { break }
                }
                items.append(try parseExpression())
            }
            try expectOp("]")
            return .list(items)
        case .op("{"):
            advance()
            var pairs: [(key: Expr, value: Expr)] = []
            while !isOp("}") {
                if !pairs.isEmpty {
                    try expectOp(",")
                    if isOp("}") { break }
                }
                let key = try parseExpression()
                try expectOp(":")
                pairs.append((key, try parseExpression()))
            }
            try expectOp("}")
            return .dict(pairs, loc)
        default:
            throw loc.syntax("unexpected \(describe(token))")
        }
    }

    private mutating func parsePostfix(_ node: Expr) throws -> Expr {
        var node = node
        while true {
            if isOp(".") {
                advance()
                let loc = here
                switch current.kind {
                case .name(let n):
                    advance()
                    node = .attribute(node, n, loc)
                case .integer(let v):
                    advance()
                    node = .item(node, .constant(.int(v)), loc)
                default:
                    throw here.syntax("expected a name or number after '.', got \(describe(current))")
                }
            } else if isOp("[") {
                node = try parseSubscript(node)
            } else if isOp("(") {
                node = .call(node, try parseCallArguments(), callLocation(node))
            } else {
                return node
            }
        }
    }

    /// Where a call is reported: a method's name, else the opening parenthesis.
    private func callLocation(_ callee: Expr) -> SourceLocation {
        if case .attribute(_, _, let loc) = callee { return loc }
        return here
    }

    private mutating func parseSubscript(_ node: Expr) throws -> Expr {
        let loc = here
        advance()  // [
        var items: [Expr] = []
        var slices: [(Expr?, Expr?, Expr?)] = []
        while !isOp("]") {
            if !items.isEmpty || !slices.isEmpty { try expectOp(",") }
            // A plain expression or a slice `start:stop:step` with every part optional.
            var start: Expr?
            if !isOp(":") {
                let e = try parseExpression()
                if !isOp(":") {
                    items.append(e)
                    continue
                }
                start = e
            }
            advance()  // first ':'
            var stop: Expr?
            var step: Expr?
            if !isOp(":") && !isOp("]") && !isOp(",") { stop = try parseExpression() }
            if isOp(":") {
                advance()
                if !isOp("]") && !isOp(",") { step = try parseExpression() }
            }
            slices.append((start, stop, step))
        }
        try expectOp("]")
        if items.count == 1 && slices.isEmpty { return .item(node, items[0], loc) }
        if items.isEmpty && slices.count == 1 {
            return .slice(node, start: slices[0].0, stop: slices[0].1, step: slices[0].2, loc)
        }
        if items.isEmpty && slices.isEmpty { throw loc.syntax("expected an index or slice inside '[]'") }
        throw loc.unsupported("multi-dimensional subscript")
    }

    private mutating func parseCallArguments() throws -> CallArguments {
        try expectOp("(")
        var args = CallArguments()
        while !isOp(")") {
            if !args.positional.isEmpty || !args.keyword.isEmpty {
                try expectOp(",")
                if isOp(")") { break }
            }
            if isOp("*") || isOp("**") { throw here.unsupported("'*args' / '**kwargs' in a call") }
            if case .name(let n) = current.kind, isOp("=", peek()) {
                advance()
                advance()
                args.keyword.append((n, try parseExpression()))
            } else {
                guard args.keyword.isEmpty else {
                    throw here.syntax("positional argument follows keyword argument")
                }
                args.positional.append(try parseExpression())
            }
        }
        try expectOp(")")
        return args
    }

    private mutating func parseFilterExpression(_ node: Expr) throws -> Expr {
        var node = node
        while true {
            if isOp("|") {
                advance()
                node = .filter(node, try parseFilterCall())
            } else if isName("is") {
                advance()
                node = .test(node, try parseTestCall())
            } else if isOp("(") {
                node = .call(node, try parseCallArguments(), callLocation(node))
            } else {
                return node
            }
        }
    }

    /// A filter name (after `|`) and its optional arguments.
    private mutating func parseFilterCall() throws -> FilterCall {
        let loc = here
        var name = try expectName()
        while isOp(".") {
            advance()
            name += "." + (try expectName())
        }
        guard let filter = FilterKind(name: name) else { throw loc.unsupported("filter '\(name)'") }
        let args = isOp("(") ? try parseCallArguments() : CallArguments()
        return FilterCall(filter: filter, arguments: args, location: loc)
    }

    /// A test name (after `is` and an optional `not`) and its argument(s).
    private mutating func parseTestCall() throws -> TestCall {
        var negated = false
        if isName("not") {
            advance()
            negated = true
        }
        let loc = here
        var name = try expectName()
        while isOp(".") {
            advance()
            name += "." + (try expectName())
        }
        guard let test = TestKind(name: name) else { throw loc.unsupported("test '\(name)'") }
        var args: [Expr] = []
        if isOp("(") {
            let call = try parseCallArguments()
            if !call.keyword.isEmpty { throw loc.unsupported("keyword arguments to test '\(name)'") }
            args = call.positional
        } else {
            // jinja2 takes one bare argument: `x is divisibleby 3`, `x is sameas none`.
            var takesArgument = false
            switch current.kind {
            case .name(let n): takesArgument = n != "else" && n != "or" && n != "and"
            case .string, .integer, .float, .op("["), .op("{"): takesArgument = true
            default: break
            }
            if takesArgument {
                if isName("is") { throw here.syntax("you cannot chain multiple tests with 'is'") }
                args = [try parsePostfix(try parsePrimary())]
            }
        }
        return TestCall(test: test, arguments: args, negated: negated, location: loc)
    }
}
