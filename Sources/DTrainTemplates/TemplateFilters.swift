import Foundation

/// The jinja2 filters this renderer implements (names resolved when the template is parsed).
enum FilterKind: String, Sendable, CaseIterable {
    case abs, attr, capitalize, `default`, dictsort, escape, first, float, indent, int, items, join, last
    case length, list, lower, map, max, min, reject, rejectattr, replace, reverse, round, safe, select
    case selectattr, sort, string, sum, title, tojson, trim, unique, upper

    /// A filter name as written in a template, with jinja2's aliases (`d`, `count`, `e`).
    init?(name: String) {
        switch name {
        case "d": self = .default
        case "count": self = .length
        case "e": self = .escape
        default: self.init(rawValue: name)
        }
    }
}

/// The jinja2 tests this renderer implements (`x is defined`, `x is not none`, ...).
enum TestKind: String, Sendable {
    case defined, undefined, none, string, mapping, iterable, sequence, number, integer, float, boolean
    case `true`, `false`, even, odd, divisibleby, eq, ne, lt, le, gt, ge, `in`, sameas, callable, lower, upper
    case escaped, filter, test

    /// A test name with jinja2's aliases (`equalto`, `==`, `lessthan`, ...).
    init?(name: String) {
        switch name {
        case "equalto", "==": self = .eq
        case "!=": self = .ne
        case "lessthan", "<": self = .lt
        case "<=": self = .le
        case "greaterthan", ">": self = .gt
        case ">=": self = .ge
        default: self.init(rawValue: name)
        }
    }
}

extension TemplateRenderer {
    // MARK: - Tests

    func applyTest(_ test: TestKind, to value: Value, arguments: [Value], at loc: SourceLocation) throws -> Bool {
        func argument() throws -> Value {
            guard let a = arguments.first else { throw loc.runtime("test '\(test.rawValue)' needs an argument") }
            return a
        }
        switch test {
        case .defined: return !value.isUndefined
        case .undefined: return value.isUndefined
        case .none: if case .none = value { return true } else { return false }
        case .string: if case .string = value { return true } else { return false }
        case .mapping: if case .dict = value { return true } else { return false }
        case .boolean: if case .bool = value { return true } else { return false }
        case .true: if case .bool(true) = value { return true } else { return false }
        case .false: if case .bool(false) = value { return true } else { return false }
        case .integer: if case .int = value { return true } else { return false }
        case .float: if case .double = value { return true } else { return false }
        case .number: return value.numeric != nil
        case .iterable:
            switch value {
            case .list, .tuple, .dict, .string, .undefined, .loop: return true
            default: return false
            }
        case .sequence:
            switch value {
            case .list, .tuple, .dict, .string, .undefined: return true
            default: return false
            }
        case .callable:
            switch value {
            case .function, .method: return true
            default: return false
            }
        case .even, .odd, .divisibleby:
            let divisor: Value = test == .divisibleby ? try argument() : .int(2)
            let remainder = try binary(.modulo, value, divisor, at: loc)
            return Value.equal(remainder, .int(test == .odd ? 1 : 0))
        case .eq: return Value.equal(value, try argument())
        case .ne: return !Value.equal(value, try argument())
        case .lt: return try compare(.less, value, try argument(), at: loc)
        case .le: return try compare(.lessOrEqual, value, try argument(), at: loc)
        case .gt: return try compare(.greater, value, try argument(), at: loc)
        case .ge: return try compare(.greaterOrEqual, value, try argument(), at: loc)
        case .in: return try contains(try argument(), value, at: loc)
        case .sameas:
            let other = try argument()
            switch (value, other) {
            case (.none, .none): return true
            case (.bool(let a), .bool(let b)): return a == b
            case (.int(let a), .int(let b)): return a == b
            case (.string(let a), .string(let b)): return PythonText.equal(a, b)
            case (.namespace(let a), .namespace(let b)): return a === b
            default: return false
            }
        case .lower, .upper:
            let s = value.pythonString
            return test == .lower ? (PythonText.lower(s) == s && PythonText.upper(s) != s)
                : (PythonText.upper(s) == s && PythonText.lower(s) != s)
        case .escaped: return false
        case .filter:
            guard case .string(let name) = try argument() else { return false }
            return FilterKind(name: name) != nil
        case .test:
            guard case .string(let name) = try argument() else { return false }
            return TestKind(name: name) != nil
        }
    }

    /// Runs the test named by a string (for `select`, `reject`, `selectattr`, `rejectattr`).
    private func namedTest(_ name: Value, _ value: Value, _ args: [Value], at loc: SourceLocation) throws -> Bool {
        guard case .string(let n) = name else { throw loc.runtime("a test name must be a string") }
        guard let test = TestKind(name: n) else { throw loc.unsupported("test '\(n)'") }
        return try applyTest(test, to: value, arguments: args, at: loc)
    }

    // MARK: - Filters

    func applyFilter(_ call: FilterCall, to value: Value) throws -> Value {
        let positional = try call.arguments.positional.map(evaluate)
        let keyword = try call.arguments.keyword.map { (name: $0.name, value: try evaluate($0.value)) }
        return try filter(call.filter, value, Arguments(positional: positional, keyword: keyword, location: call.location))
    }

    /// `item.attribute` for filters taking `attribute=`: dotted paths, integer parts index lists.
    private func attributePath(_ item: Value, _ path: Value, at loc: SourceLocation) throws -> Value {
        switch path {
        case .int: return try self.item(of: item, path, at: loc)
        case .string(let p):
            var v = item
            for part in p.split(separator: ".", omittingEmptySubsequences: false) {
                let key: Value = Int(part).map(Value.int) ?? .string(String(part))
                v = try self.item(of: v, key, at: loc)
            }
            return v
        default: throw loc.runtime("attribute must be a string or integer, not \(path.typeName)")
        }
    }

    /// Case-folded sort key for filters with `case_sensitive=False`.
    private func foldCase(_ v: Value, _ caseSensitive: Bool) -> Value {
        if !caseSensitive, case .string(let s) = v { return .string(PythonText.lower(s)) }
        return v
    }

    private func sorted(_ items: [Value], by key: (Value) throws -> Value, reverse: Bool,
                        at loc: SourceLocation) throws -> [Value] {
        let keyed = try items.map { (item: $0, key: try key($0)) }
        var failure: ChatTemplateError?
        // A stable sort, like Python's.
        let order = Array(keyed.indices).sorted { i, j in
            guard let c = Value.compare(keyed[i].key, keyed[j].key) else {
                failure = loc.runtime("'<' not supported between instances of '\(keyed[i].key.typeName)' and "
                                      + "'\(keyed[j].key.typeName)'")
                return i < j
            }
            if c == 0 { return i < j }
            return reverse ? c > 0 : c < 0
        }
        if let failure { throw failure }
        return order.map { keyed[$0].item }
    }

    func filter(_ kind: FilterKind, _ value: Value, _ args: Arguments) throws -> Value {
        let loc = args.location
        let name = "filter '\(kind.rawValue)'"
        switch kind {
        case .trim:
            let chars = try args.bind(["chars"], for: name)[0]
            let set: String?
            switch chars {
            case nil, .none?: set = nil
            case .string(let s)?: set = s
            case let other?: throw loc.runtime("trim chars must be a string, not \(other.typeName)")
            }
            return .string(PythonText.strip(value.pythonString, chars: set))
        case .upper:
            _ = try args.bind([], for: name)
            return .string(PythonText.upper(value.pythonString))
        case .lower:
            _ = try args.bind([], for: name)
            return .string(PythonText.lower(value.pythonString))
        case .title:
            _ = try args.bind([], for: name)
            return .string(PythonText.jinjaTitle(value.pythonString))
        case .capitalize:
            _ = try args.bind([], for: name)
            return .string(PythonText.capitalize(value.pythonString))
        case .string, .safe:
            _ = try args.bind([], for: name)
            if kind == .safe, !value.isUndefined { return value }
            return .string(value.pythonString)
        case .escape:
            _ = try args.bind([], for: name)
            var out = ""
            for c in value.pythonString.unicodeScalars {
                switch c {
                case "&": out += "&amp;"
                case "<": out += "&lt;"
                case ">": out += "&gt;"
                case "\"": out += "&#34;"
                case "'": out += "&#39;"
                default: out.unicodeScalars.append(c)
                }
            }
            return .string(out)
        case .default:
            let bound = try args.bind(["default_value", "boolean"], for: name)
            let useDefault = value.isUndefined || ((bound[1]?.isTruthy ?? false) && !value.isTruthy)
            return useDefault ? (bound[0] ?? .string("")) : value
        case .length:
            _ = try args.bind([], for: name)
            switch value {
            case .string(let s): return .int(PythonText.length(s))
            case .list(let a), .tuple(let a): return .int(a.count)
            case .dict(let d): return .int(d.count)
            case .undefined: return .int(0)
            case .loop(let l): return .int(l.items.count)
            default: throw loc.runtime("object of type '\(value.typeName)' has no len()")
            }
        case .first, .last:
            _ = try args.bind([], for: name)
            let items = try iterate(value, at: loc)
            guard let item = kind == .first ? items.first : items.last else {
                return .undefined("No \(kind.rawValue) item, sequence was empty.")
            }
            return item
        case .list:
            _ = try args.bind([], for: name)
            return .list(try iterate(value, at: loc))
        case .reverse:
            _ = try args.bind([], for: name)
            if case .string(let s) = value { return .string(makeString(s.unicodeScalars.reversed())) }
            return .list(try iterate(value, at: loc).reversed())
        case .items:
            _ = try args.bind([], for: name)
            switch value {
            case .undefined: return .list([])
            case .dict(let d): return .list(zip(d.keys, d.values).map { .tuple([.string($0.0), $0.1]) })
            default: throw loc.runtime("Can only get item pairs from a mapping.")
            }
        case .join:
            let bound = try args.bind(["d", "attribute"], for: name)
            var items = try iterate(value, at: loc)
            if let attribute = bound[1], !(attribute.isNoneValue) {
                items = try items.map { try attributePath($0, attribute, at: loc) }
            }
            return .string(items.map(\.pythonString).joined(separator: (bound[0] ?? .string("")).pythonString))
        case .replace:
            let bound = try args.bind(["old", "new", "count"], for: name)
            guard let old = bound[0], let new = bound[1] else {
                throw loc.runtime("replace needs the old and the new text")
            }
            var count = -1
            if let c = bound[2], !c.isNoneValue {
                guard case .int(let n) = c else { throw loc.runtime("replace count must be an integer") }
                count = n
            }
            return .string(PythonText.replace(value.pythonString, old.pythonString, new.pythonString, count: count))
        case .tojson:
            let bound = try args.bind(["ensure_ascii", "indent", "separators", "sort_keys"], for: name)
            var encoder = PythonJSON()
            encoder.ensureASCII = bound[0]?.isTruthy ?? false
            switch bound[1] {
            case nil, .none?: break
            case .int(let n)?: encoder.indent = String(repeating: " ", count: Swift.max(0, n))
            case .bool(let b)?: encoder.indent = b ? " " : ""
            case .string(let s)?: encoder.indent = s
            case let other?: throw loc.runtime("tojson indent must be an integer or string, not \(other.typeName)")
            }
            if encoder.indent != nil { encoder.itemSeparator = "," }
            if let separators = bound[2], !separators.isNoneValue {
                let parts = try iterate(separators, at: loc)
                guard parts.count == 2, case .string(let item) = parts[0], case .string(let key) = parts[1] else {
                    throw loc.runtime("tojson separators must be a pair of strings, like (', ', ': ')")
                }
                encoder.itemSeparator = item
                encoder.keySeparator = key
            }
            encoder.sortKeys = bound[3]?.isTruthy ?? false
            do {
                return .string(try encoder.encode(value))
            } catch let failure as PythonJSON.Failure {
                throw loc.runtime(failure.message)
            }
        case .int:
            let bound = try args.bind(["default", "base"], for: name)
            let fallback = bound[0] ?? .int(0)
            let base = try integerArgument(bound[1], default: 10, loc)
            switch value {
            case .int: return value
            case .bool(let b): return .int(b ? 1 : 0)
            case .double(let d): return d.isFinite ? .int(Int(d)) : fallback
            case .string(let s):
                let text = PythonText.strip(s, chars: nil).replacingUnderscores()
                if let i = Int(text, radix: base) { return .int(i) }
                if let d = Double(text), d.isFinite { return .int(Int(d)) }
                return fallback
            case .undefined(let why): throw loc.runtime(why)
            default: return fallback
            }
        case .float:
            let fallback = try args.bind(["default"], for: name)[0] ?? .double(0)
            switch value {
            case .double: return value
            case .int(let i): return .double(Double(i))
            case .bool(let b): return .double(b ? 1 : 0)
            case .string(let s):
                return Double(PythonText.strip(s, chars: nil).replacingUnderscores()).map(Value.double) ?? fallback
            case .undefined(let why): throw loc.runtime(why)
            default: return fallback
            }
        case .abs:
            _ = try args.bind([], for: name)
            switch value.numeric {
            case .int(let i)?:
                guard i != Int.min else { throw loc.unsupported("integer beyond 64 bits") }
                return .int(Swift.abs(i))
            case .double(let d)?: return .double(Swift.abs(d))
            case nil:
                if case .undefined(let why) = value { throw loc.runtime(why) }
                throw loc.runtime("bad operand type for abs(): '\(value.typeName)'")
            }
        case .round:
            let bound = try args.bind(["precision", "method"], for: name)
            let precision = try integerArgument(bound[0], default: 0, loc)
            let method = (bound[1] ?? .string("common")).pythonString
            guard let n = value.numeric else {
                if case .undefined(let why) = value { throw loc.runtime(why) }
                throw loc.runtime("round needs a number, not \(value.typeName)")
            }
            let scale = Foundation.pow(10.0, Double(precision))
            let x = n.double * scale
            switch method {
            case "common":
                if case .int = n { return n.value }
                return .double(x.rounded(.toNearestOrEven) / scale)
            case "ceil": return .double(x.rounded(.up) / scale)
            case "floor": return .double(x.rounded(.down) / scale)
            default: throw loc.runtime("method must be common, ceil or floor")
            }
        case .indent:
            let bound = try args.bind(["width", "first", "blank"], for: name)
            let indentation: String
            switch bound[0] {
            case nil: indentation = "    "
            case .string(let s)?: indentation = s
            case let w?: indentation = String(repeating: " ", count: Swift.max(0, try integerArgument(w, default: 4, loc)))
            }
            if case .undefined(let why) = value { throw loc.runtime(why) }
            let lines = PythonText.splitLines(value.pythonString + "\n")
            var result: String
            if bound[2]?.isTruthy ?? false {
                result = lines.joined(separator: "\n" + indentation)
            } else {
                result = lines.first ?? ""
                let rest = lines.dropFirst()
                if !rest.isEmpty {
                    result += "\n" + rest.map { $0.isEmpty ? $0 : indentation + $0 }.joined(separator: "\n")
                }
            }
            if bound[1]?.isTruthy ?? false { result = indentation + result }
            return .string(result)
        case .map:
            let items = try iterate(value, at: loc)
            if args.positional.isEmpty, let attribute = args.keyword.first(where: { $0.name == "attribute" }) {
                let fallback = args.keyword.first(where: { $0.name == "default" })?.value
                if let extra = args.keyword.first(where: { $0.name != "attribute" && $0.name != "default" }) {
                    throw loc.runtime("unexpected keyword argument '\(extra.name)' for filter 'map'")
                }
                return .list(try items.map { item in
                    let v = try attributePath(item, attribute.value, at: loc)
                    if v.isUndefined, let fallback { return fallback }
                    return v
                })
            }
            guard case .string(let filterName)? = args.positional.first else {
                throw loc.runtime("map requires a filter name or attribute=")
            }
            guard let inner = FilterKind(name: filterName) else { throw loc.unsupported("filter '\(filterName)'") }
            let rest = Arguments(positional: Array(args.positional.dropFirst()), keyword: args.keyword, location: loc)
            return .list(try items.map { try filter(inner, $0, rest) })
        case .select, .reject, .selectattr, .rejectattr:
            let byAttribute = kind == .selectattr || kind == .rejectattr
            let keep = kind == .select || kind == .selectattr
            try args.noKeywords(name)
            var rest = args.positional[...]
            var attribute: Value?
            if byAttribute {
                guard let a = rest.first else { throw loc.runtime("Missing parameter for attribute name") }
                attribute = a
                rest = rest.dropFirst()
            }
            let testName = rest.first
            let testArgs = Array(rest.dropFirst())
            var out: [Value] = []
            for item in try iterate(value, at: loc) {
                let subject = try attribute.map { try attributePath(item, $0, at: loc) } ?? item
                let passes = try testName.map { try namedTest($0, subject, testArgs, at: loc) } ?? subject.isTruthy
                if passes == keep { out.append(item) }
            }
            return .list(out)
        case .attr:
            let bound = try args.bind(["name"], for: name)
            guard case .string(let attribute)? = bound[0] else { throw loc.runtime("attr needs an attribute name") }
            if case .dict = value {
                return Methods.dict.contains(attribute) ? .method(value, attribute)
                    : .undefined("'dict object' has no attribute '\(attribute)'")
            }
            return try self.attribute(of: value, attribute, at: loc)
        case .dictsort:
            let bound = try args.bind(["case_sensitive", "by", "reverse"], for: name)
            guard case .dict(let d) = value else { throw loc.runtime("dictsort needs a mapping, not \(value.typeName)") }
            let caseSensitive = bound[0]?.isTruthy ?? false
            let byValue = (bound[1] ?? .string("key")).pythonString == "value"
            let pairs = zip(d.keys, d.values).map { Value.tuple([.string($0.0), $0.1]) }
            return .list(try sorted(pairs, by: { pair in
                guard case .tuple(let kv) = pair else { return pair }
                return self.foldCase(byValue ? kv[1] : kv[0], caseSensitive)
            }, reverse: bound[2]?.isTruthy ?? false, at: loc))
        case .sort:
            let bound = try args.bind(["reverse", "case_sensitive", "attribute"], for: name)
            let caseSensitive = bound[1]?.isTruthy ?? false
            let attribute = bound[2].flatMap { $0.isNoneValue ? nil : $0 }
            return .list(try sorted(try iterate(value, at: loc), by: { item in
                let k = try attribute.map { try self.attributePath(item, $0, at: loc) } ?? item
                return self.foldCase(k, caseSensitive)
            }, reverse: bound[0]?.isTruthy ?? false, at: loc))
        case .unique:
            let bound = try args.bind(["case_sensitive", "attribute"], for: name)
            let caseSensitive = bound[0]?.isTruthy ?? false
            let attribute = bound[1].flatMap { $0.isNoneValue ? nil : $0 }
            var seen: [Value] = []
            var out: [Value] = []
            for item in try iterate(value, at: loc) {
                let k = foldCase(try attribute.map { try attributePath(item, $0, at: loc) } ?? item, caseSensitive)
                if !seen.contains(where: { Value.equal($0, k) }) {
                    seen.append(k)
                    out.append(item)
                }
            }
            return .list(out)
        case .min, .max:
            let bound = try args.bind(["case_sensitive", "attribute"], for: name)
            let caseSensitive = bound[0]?.isTruthy ?? false
            let attribute = bound[1].flatMap { $0.isNoneValue ? nil : $0 }
            let ordered = try sorted(try iterate(value, at: loc), by: { item in
                self.foldCase(try attribute.map { try self.attributePath(item, $0, at: loc) } ?? item, caseSensitive)
            }, reverse: false, at: loc)
            guard let pick = kind == .min ? ordered.first : ordered.last else {
                return .undefined("No aggregated item, sequence was empty.")
            }
            return pick
        case .sum:
            let bound = try args.bind(["attribute", "start"], for: name)
            var total = bound[1] ?? .int(0)
            let attribute = bound[0].flatMap { $0.isNoneValue ? nil : $0 }
            for item in try iterate(value, at: loc) {
                total = try binary(.add, total, try attribute.map { try attributePath(item, $0, at: loc) } ?? item, at: loc)
            }
            return total
        }
    }

    private func integerArgument(_ v: Value?, default fallback: Int, _ loc: SourceLocation) throws -> Int {
        switch v {
        case nil, .none?: return fallback
        case .int(let i)?: return i
        case .bool(let b)?: return b ? 1 : 0
        case let other?: throw loc.runtime("expected an integer argument, not \(other.typeName)")
        }
    }
}

extension Value {
    var isNoneValue: Bool {
        if case .none = self { return true }
        return false
    }
}

extension String {
    /// Drops `_` digit separators, which Python's int() and float() accept.
    func replacingUnderscores() -> String { contains("_") ? filter { $0 != "_" } : self }
}
