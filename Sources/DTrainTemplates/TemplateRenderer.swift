import Foundation

/// Runs a parsed template once: holds the variable scopes and the output being built.
///
/// Scoping follows jinja2: `set` at the top level or inside `if` writes the current scope; each
/// iteration of a `for` body gets a fresh scope (its assignments vanish at the end of the iteration
/// and after the loop), so state that must survive a loop lives in a `namespace()` object.
final class TemplateRenderer {
    /// Innermost scope last; index 0 holds the globals and the caller's variables.
    private var scopes: [[String: Value]]
    private(set) var output = ""

    enum Flow { case normal, breakLoop, continueLoop }

    init(globals: [String: Value]) {
        scopes = [globals, [:]]
        output.reserveCapacity(4096)
    }

    // MARK: - Statements

    func execute(_ body: [Statement]) throws -> Flow {
        for statement in body {
            switch statement {
            case .text(let text):
                output += text
            case .output(let expr):
                let value = try evaluate(expr)
                if case .string(let s) = value { output += s } else { output += value.pythonString }
            case .conditional(let branches, let otherwise):
                var chosen = otherwise
                for branch in branches {
                    if try evaluate(branch.test).isTruthy {
                        chosen = branch.body
                        break
                    }
                }
                let flow = try execute(chosen)
                if flow != .normal { return flow }
            case .forLoop(let loop):
                let flow = try runLoop(loop)
                if flow != .normal { return flow }
            case .assign(let target, let expr, let loc):
                try assign(target, try evaluate(expr), at: loc)
            case .assignBlock(let target, let filters, let body, let loc):
                let saved = output
                output = ""
                let flow = try execute(body)
                var value = Value.string(output)
                output = saved
                for f in filters { value = try applyFilter(f, to: value) }
                try assign(target, value, at: loc)
                if flow != .normal { return flow }
            case .loopBreak:
                return .breakLoop
            case .loopContinue:
                return .continueLoop
            }
        }
        return .normal
    }

    private func runLoop(_ loop: ForLoop) throws -> Flow {
        var items = try iterate(try evaluate(loop.iterable), at: loop.location)
        if let condition = loop.condition {
            var kept: [Value] = []
            for item in items {
                scopes.append([:])
                try assign(loop.target, item, at: loop.location)
                let keep = try evaluate(condition).isTruthy
                scopes.removeLast()
                if keep { kept.append(item) }
            }
            items = kept
        }
        if items.isEmpty {
            scopes.append([:])
            defer { scopes.removeLast() }
            return try execute(loop.otherwise)
        }
        let context = LoopContext(items: items)
        for (i, item) in items.enumerated() {
            context.index0 = i
            scopes.append(["loop": .loop(context)])
            defer { scopes.removeLast() }
            try assign(loop.target, item, at: loop.location)
            if try execute(loop.body) == .breakLoop { break }
        }
        return .normal
    }

    private func assign(_ target: AssignTarget, _ value: Value, at loc: SourceLocation) throws {
        switch target {
        case .name(let name):
            scopes[scopes.count - 1][name] = value
        case .tuple(let targets):
            let items = try iterate(value, at: loc)
            guard items.count == targets.count else {
                throw loc.runtime(items.count > targets.count
                    ? "too many values to unpack (expected \(targets.count))"
                    : "not enough values to unpack (expected \(targets.count), got \(items.count))")
            }
            for (t, v) in zip(targets, items) { try assign(t, v, at: loc) }
        case .namespaceAttribute(let name, let attribute):
            guard case .namespace(let ns) = lookup(name) else {
                throw loc.runtime("cannot assign attribute '\(attribute)' on '\(name)', which is not a namespace() object")
            }
            ns.attributes[attribute] = value
        }
    }

    private func lookup(_ name: String) -> Value {
        var i = scopes.count - 1
        while i >= 0 {
            if let v = scopes[i][name] { return v }
            i -= 1
        }
        return .undefined("'\(name)' is undefined")
    }

    // MARK: - Expressions

    func evaluate(_ expr: Expr) throws -> Value {
        switch expr {
        case .constant(let c):
            switch c {
            case .none: return .none
            case .bool(let b): return .bool(b)
            case .int(let i): return .int(i)
            case .double(let d): return .double(d)
            case .string(let s): return .string(s)
            }
        case .name(let name, _):
            return lookup(name)
        case .list(let items):
            return .list(try items.map(evaluate))
        case .tuple(let items):
            return .tuple(try items.map(evaluate))
        case .dict(let pairs, let loc):
            var d = OrderedDict()
            for pair in pairs {
                guard case .string(let key) = try evaluate(pair.key) else {
                    throw loc.unsupported("dictionary literal with a non-string key")
                }
                d[key] = try evaluate(pair.value)
            }
            return .dict(d)
        case .attribute(let base, let name, let loc):
            return try attribute(of: try evaluate(base), name, at: loc)
        case .item(let base, let key, let loc):
            return try item(of: try evaluate(base), try evaluate(key), at: loc)
        case .slice(let base, let start, let stop, let step, let loc):
            let value = try evaluate(base)
            return try slice(value, start.map(evaluate), stop.map(evaluate), step.map(evaluate), at: loc)
        case .call(let callee, let args, let loc):
            let function = try evaluate(callee)
            let positional = try args.positional.map(evaluate)
            let keyword = try args.keyword.map { (name: $0.name, value: try evaluate($0.value)) }
            return try call(function, Arguments(positional: positional, keyword: keyword, location: loc))
        case .filter(let base, let filter):
            return try applyFilter(filter, to: try evaluate(base))
        case .test(let base, let test):
            let value = try evaluate(base)
            let args = try test.arguments.map(evaluate)
            let result = try applyTest(test.test, to: value, arguments: args, at: test.location)
            return .bool(result != test.negated)
        case .unary(let op, let operand, let loc):
            let value = try evaluate(operand)
            if case .undefined(let why) = value { throw loc.runtime(why) }
            guard let n = value.numeric else {
                throw loc.runtime("bad operand type for unary \(op == .negate ? "-" : "+"): '\(value.typeName)'")
            }
            if op == .plus { return n.value }
            switch n {
            case .int(let i):
                let (r, overflow) = (0).subtractingReportingOverflow(i)
                if overflow { throw loc.unsupported("integer beyond 64 bits") }
                return .int(r)
            case .double(let d): return .double(-d)
            }
        case .binary(let op, let left, let right, let loc):
            return try binary(op, try evaluate(left), try evaluate(right), at: loc)
        case .concat(let items):
            var s = ""
            for item in items { s += try evaluate(item).pythonString }
            return .string(s)
        case .and(let left, let right):
            let l = try evaluate(left)
            return l.isTruthy ? try evaluate(right) : l
        case .or(let left, let right):
            let l = try evaluate(left)
            return l.isTruthy ? l : try evaluate(right)
        case .not(let operand):
            return .bool(!(try evaluate(operand).isTruthy))
        case .compare(let first, let ops, let loc):
            var left = try evaluate(first)
            for (op, operandExpr) in ops {
                let right = try evaluate(operandExpr)
                guard try compare(op, left, right, at: loc) else { return .bool(false) }
                left = right
            }
            return .bool(true)
        case .conditional(let test, let then, let otherwise):
            if try evaluate(test).isTruthy { return try evaluate(then) }
            if let otherwise { return try evaluate(otherwise) }
            return .undefined("the inline if expression is false and has no else")
        }
    }

    // MARK: - Attribute and item access

    /// `value.name`: jinja2 tries the Python attribute first (methods of str/dict/list, fields of
    /// `loop` and namespaces), then the mapping key.
    func attribute(of value: Value, _ name: String, at loc: SourceLocation) throws -> Value {
        switch value {
        case .undefined(let why):
            throw loc.runtime(why)
        case .dict(let d):
            if Methods.dict.contains(name) { return .method(value, name) }
            return d[name] ?? .undefined("'dict object' has no attribute '\(name)'")
        case .string:
            if Methods.string.contains(name) { return .method(value, name) }
        case .list, .tuple:
            if Methods.list.contains(name) { return .method(value, name) }
        case .namespace(let ns):
            if let v = ns.attributes[name] { return v }
        case .loop(let l):
            if let v = l.attribute(name) { return v }
        default:
            break
        }
        return .undefined("'\(value.typeName) object' has no attribute '\(name)'")
    }

    /// `value[key]`: jinja2 tries the item first, then (for a string key) the attribute.
    func item(of value: Value, _ key: Value, at loc: SourceLocation) throws -> Value {
        if case .undefined(let why) = value { throw loc.runtime(why) }
        switch (value, key) {
        case (.list(let a), _), (.tuple(let a), _):
            if let i = integer(key) {
                let j = i < 0 ? i + a.count : i
                if j >= 0 && j < a.count { return a[j] }
                return .undefined("\(value.typeName) object has no element \(i)")
            }
        case (.string(let s), _):
            if let i = integer(key) {
                let scalars = PythonText.scalars(s)
                let j = i < 0 ? i + scalars.count : i
                if j >= 0 && j < scalars.count { return .string(String(scalars[j])) }
                return .undefined("string index \(i) out of range")
            }
        case (.dict(let d), .string(let k)):
            if let v = d[k] { return v }
        default:
            break
        }
        if case .string(let name) = key {
            switch value {
            case .dict: if Methods.dict.contains(name) { return .method(value, name) }
            default: return try attribute(of: value, name, at: loc)
            }
        }
        return .undefined("'\(value.typeName) object' has no item \(key.pythonRepr)")
    }

    /// An integer index (bools count, as in Python).
    private func integer(_ v: Value) -> Int? {
        switch v {
        case .int(let i): return i
        case .bool(let b): return b ? 1 : 0
        default: return nil
        }
    }

    /// Python slicing (`messages[1:]`, `text[::-1]`) of lists, tuples and strings, by code point.
    private func slice(_ value: Value, _ start: Value?, _ stop: Value?, _ step: Value?,
                       at loc: SourceLocation) throws -> Value {
        if case .undefined(let why) = value { throw loc.runtime(why) }
        func bound(_ v: Value?) throws -> Int? {
            guard let v else { return nil }
            if case .none = v { return nil }
            guard let i = integer(v) else {
                if case .undefined(let why) = v { throw loc.runtime(why) }
                throw loc.runtime("slice indices must be integers or None, not \(v.typeName)")
            }
            return i
        }
        let stepValue = try bound(step) ?? 1
        guard stepValue != 0 else { throw loc.runtime("slice step cannot be zero") }
        func indices(_ count: Int) throws -> [Int] {
            let lower = stepValue > 0 ? 0 : -1
            let upper = stepValue > 0 ? count : count - 1
            func clamp(_ x: Int?, _ fallback: Int) -> Int {
                guard var x else { return fallback }
                if x < 0 {
                    x += count
                    return max(x, lower)
                }
                return min(x, upper)
            }
            let from = clamp(try bound(start), stepValue > 0 ? lower : upper)
            let to = clamp(try bound(stop), stepValue > 0 ? upper : lower)
            var out: [Int] = []
            var i = from
            while stepValue > 0 ? i < to : i > to {
                out.append(i)
                i += stepValue
            }
            return out
        }
        switch value {
        case .list(let a): return .list(try indices(a.count).map { a[$0] })
        case .tuple(let a): return .tuple(try indices(a.count).map { a[$0] })
        case .string(let s):
            let scalars = PythonText.scalars(s)
            if start == nil && stop == nil && step == nil { return value }
            return .string(makeString(try indices(scalars.count).map { scalars[$0] }))
        default:
            return .undefined("'\(value.typeName) object' cannot be sliced")
        }
    }

    // MARK: - Operators

    private func typeError(_ op: String, _ a: Value, _ b: Value, at loc: SourceLocation) -> ChatTemplateError {
        switch a {
        case .string, .list, .tuple:
            if op == "+" {
                return loc.runtime("can only concatenate \(a.typeName) (not \"\(b.typeName)\") to \(a.typeName)")
            }
        default:
            break
        }
        return loc.runtime("unsupported operand type(s) for \(op): '\(a.typeName)' and '\(b.typeName)'")
    }

    func binary(_ op: BinaryOperator, _ a: Value, _ b: Value, at loc: SourceLocation) throws -> Value {
        if case .undefined(let why) = a { throw loc.runtime(why) }
        if case .undefined(let why) = b { throw loc.runtime(why) }
        switch (op, a, b) {
        case (.add, .string(let x), .string(let y)): return .string(x + y)
        case (.add, .list(let x), .list(let y)): return .list(x + y)
        case (.add, .tuple(let x), .tuple(let y)): return .tuple(x + y)
        case (.multiply, .string(let s), _), (.multiply, _, .string(let s)):
            guard let n = integer(a) ?? integer(b) else { throw typeError("*", a, b, at: loc) }
            return .string(n <= 0 ? "" : String(repeating: s, count: n))
        case (.multiply, .list(let x), _), (.multiply, _, .list(let x)):
            guard let n = integer(a) ?? integer(b) else { throw typeError("*", a, b, at: loc) }
            return .list(n <= 0 ? [] : Array([[Value]](repeating: x, count: n).joined()))
        case (.modulo, .string, _):
            throw loc.unsupported("'%' string formatting")
        default:
            break
        }
        guard let x = a.numeric, let y = b.numeric else { throw typeError(op.rawValue, a, b, at: loc) }
        if case .int(let i) = x, case .int(let j) = y {
            return try integerArithmetic(op, i, j, at: loc)
        }
        let p = x.double, q = y.double
        switch op {
        case .add: return .double(p + q)
        case .subtract: return .double(p - q)
        case .multiply: return .double(p * q)
        case .divide:
            guard q != 0 else { throw loc.runtime("float division by zero") }
            return .double(p / q)
        case .floorDivide:
            guard q != 0 else { throw loc.runtime("float floor division by zero") }
            return .double(((p - pythonModulo(p, q)) / q).rounded())
        case .modulo:
            guard q != 0 else { throw loc.runtime("float modulo by zero") }
            return .double(pythonModulo(p, q))
        case .power:
            return .double(Foundation.pow(p, q))
        }
    }

    private func pythonModulo(_ p: Double, _ q: Double) -> Double {
        var r = p.truncatingRemainder(dividingBy: q)
        if r != 0 && (r < 0) != (q < 0) { r += q }
        return r
    }

    private func integerArithmetic(_ op: BinaryOperator, _ i: Int, _ j: Int, at loc: SourceLocation) throws -> Value {
        func checked(_ r: (partialValue: Int, overflow: Bool)) throws -> Value {
            if r.overflow { throw loc.unsupported("integer arithmetic beyond 64 bits") }
            return .int(r.partialValue)
        }
        switch op {
        case .add: return try checked(i.addingReportingOverflow(j))
        case .subtract: return try checked(i.subtractingReportingOverflow(j))
        case .multiply: return try checked(i.multipliedReportingOverflow(by: j))
        case .divide:
            guard j != 0 else { throw loc.runtime("division by zero") }
            return .double(Double(i) / Double(j))
        case .floorDivide, .modulo:
            guard j != 0 else { throw loc.runtime("integer division or modulo by zero") }
            var q = i / j, r = i % j
            if r != 0 && (r < 0) != (j < 0) {
                q -= 1
                r += j
            }
            return .int(op == .floorDivide ? q : r)
        case .power:
            if j < 0 { return .double(Foundation.pow(Double(i), Double(j))) }
            var result = 1, base = i, e = j
            while e > 0 {
                if e & 1 == 1 { result = try checkedInt(result.multipliedReportingOverflow(by: base), loc) }
                e >>= 1
                if e > 0 { base = try checkedInt(base.multipliedReportingOverflow(by: base), loc) }
            }
            return .int(result)
        }
    }

    private func checkedInt(_ r: (partialValue: Int, overflow: Bool), _ loc: SourceLocation) throws -> Int {
        if r.overflow { throw loc.unsupported("integer arithmetic beyond 64 bits") }
        return r.partialValue
    }

    func compare(_ op: CompareOperator, _ a: Value, _ b: Value, at loc: SourceLocation) throws -> Bool {
        switch op {
        case .equal: return Value.equal(a, b)
        case .notEqual: return !Value.equal(a, b)
        case .contains: return try contains(b, a, at: loc)
        case .notContains: return !(try contains(b, a, at: loc))
        default:
            if case .undefined(let why) = a { throw loc.runtime(why) }
            if case .undefined(let why) = b { throw loc.runtime(why) }
            guard let c = Value.compare(a, b) else {
                throw loc.runtime("'\(op.rawValue)' not supported between instances of '\(a.typeName)' and '\(b.typeName)'")
            }
            switch op {
            case .less: return c < 0
            case .lessOrEqual: return c <= 0
            case .greater: return c > 0
            default: return c >= 0
            }
        }
    }

    /// Python `item in container`.
    func contains(_ container: Value, _ item: Value, at loc: SourceLocation) throws -> Bool {
        switch container {
        case .string(let s):
            guard case .string(let needle) = item else {
                throw loc.runtime("'in <string>' requires string as left operand, not \(item.typeName)")
            }
            if needle.isEmpty { return true }
            return PythonText.occurrences(PythonText.scalars(needle), in: PythonText.scalars(s), limit: 1).count == 1
        case .list(let a), .tuple(let a):
            return a.contains { Value.equal($0, item) }
        case .dict(let d):
            if case .string(let k) = item { return d.index(of: k) != nil }
            return false
        case .undefined:
            return false
        case .loop(let l):
            return l.items.contains { Value.equal($0, item) }
        default:
            throw loc.runtime("argument of type '\(container.typeName)' is not iterable")
        }
    }

    /// The items a `for` loop, `list` or `join` sees: list elements, mapping keys, string code
    /// points; undefined iterates as empty.
    func iterate(_ value: Value, at loc: SourceLocation) throws -> [Value] {
        switch value {
        case .list(let a), .tuple(let a): return a
        case .dict(let d): return d.keys.map(Value.string)
        case .string(let s): return s.unicodeScalars.map { .string(String($0)) }
        case .undefined: return []
        case .loop(let l): return l.items
        default: throw loc.runtime("'\(value.typeName)' object is not iterable")
        }
    }

    // MARK: - Calls

    /// Evaluated call arguments, bound to parameter names on demand.
    struct Arguments {
        var positional: [Value]
        var keyword: [(name: String, value: Value)]
        var location: SourceLocation

        /// Values for `parameters` in order (nil where neither given nor defaulted by the caller).
        func bind(_ parameters: [String], for callee: String) throws -> [Value?] {
            guard positional.count <= parameters.count else {
                throw location.runtime("\(callee) takes at most \(parameters.count) argument(s) (\(positional.count) given)")
            }
            var out = [Value?](repeating: nil, count: parameters.count)
            for (i, v) in positional.enumerated() { out[i] = v }
            for (name, v) in keyword {
                guard let i = parameters.firstIndex(of: name) else {
                    throw location.runtime("\(callee) got an unexpected keyword argument '\(name)'")
                }
                guard out[i] == nil else {
                    throw location.runtime("\(callee) got multiple values for argument '\(name)'")
                }
                out[i] = v
            }
            return out
        }

        func noKeywords(_ callee: String) throws {
            if let first = keyword.first {
                throw location.runtime("\(callee) got an unexpected keyword argument '\(first.name)'")
            }
        }
    }

    func call(_ function: Value, _ args: Arguments) throws -> Value {
        switch function {
        case .function(let f): return try callBuiltin(f, args)
        case .method(let receiver, let name): return try callMethod(receiver, name, args)
        case .undefined(let why): throw args.location.runtime(why)
        default: throw args.location.runtime("'\(function.typeName)' object is not callable")
        }
    }
}

extension Value.Numeric {
    var value: Value {
        switch self {
        case .int(let i): return .int(i)
        case .double(let d): return .double(d)
        }
    }
}
