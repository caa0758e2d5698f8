import Foundation

/// The Python method names of each receiver type. Looking one up gives a bound method (jinja2
/// returns the real Python method); calling one this renderer lacks is an `.unsupported` error.
enum Methods {
    static let string: Set<String> = [
        "capitalize", "casefold", "center", "count", "encode", "endswith", "expandtabs", "find", "format",
        "format_map", "index", "isalnum", "isalpha", "isascii", "isdecimal", "isdigit", "isidentifier",
        "islower", "isnumeric", "isprintable", "isspace", "istitle", "isupper", "join", "ljust", "lower",
        "lstrip", "maketrans", "partition", "removeprefix", "removesuffix", "replace", "rfind", "rindex",
        "rjust", "rpartition", "rsplit", "rstrip", "split", "splitlines", "startswith", "strip", "swapcase",
        "title", "translate", "upper", "zfill",
    ]
    static let dict: Set<String> = [
        "clear", "copy", "fromkeys", "get", "items", "keys", "pop", "popitem", "setdefault", "update", "values",
    ]
    static let list: Set<String> = [
        "append", "clear", "copy", "count", "extend", "index", "insert", "pop", "remove", "reverse", "sort",
    ]
    /// Methods that would change a value; transformers' ImmutableSandboxedEnvironment refuses them.
    static let mutating: Set<String> = [
        "clear", "pop", "popitem", "setdefault", "update", "append", "extend", "insert", "remove", "reverse", "sort",
    ]
}

extension TemplateRenderer {
    // MARK: - Builtin functions

    func callBuiltin(_ function: BuiltinFunction, _ args: Arguments) throws -> Value {
        let loc = args.location
        switch function {
        case .raiseException:
            let message = args.positional.first ?? args.keyword.first?.value ?? .string("")
            throw ChatTemplateError.raised(message: message.pythonString)
        case .range:
            try args.noKeywords("range()")
            var bounds: [Int] = []
            for v in args.positional {
                switch v {
                case .int(let i): bounds.append(i)
                case .bool(let b): bounds.append(b ? 1 : 0)
                case .undefined(let why): throw loc.runtime(why)
                default: throw loc.runtime("'\(v.typeName)' object cannot be interpreted as an integer")
                }
            }
            let start: Int, stop: Int, step: Int
            switch bounds.count {
            case 1: (start, stop, step) = (0, bounds[0], 1)
            case 2: (start, stop, step) = (bounds[0], bounds[1], 1)
            case 3: (start, stop, step) = (bounds[0], bounds[1], bounds[2])
            default: throw loc.runtime("range expected 1 to 3 arguments, got \(bounds.count)")
            }
            guard step != 0 else { throw loc.runtime("range() arg 3 must not be zero") }
            let count = step > 0 ? max(0, (stop - start + step - 1) / step) : max(0, (start - stop - step - 1) / -step)
            guard count <= 100_000 else {
                throw loc.runtime("Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000)")
            }
            return .list((0..<count).map { .int(start + $0 * step) })
        case .namespace, .dict:
            var d = OrderedDict()
            if let first = args.positional.first {
                guard args.positional.count == 1 else {
                    throw loc.runtime("\(function.rawValue)() takes at most 1 positional argument")
                }
                switch first {
                case .dict(let given): d = given
                case .namespace(let ns): d = ns.attributes
                default: throw loc.runtime("\(function.rawValue)() expects a mapping, not \(first.typeName)")
                }
            }
            for (k, v) in args.keyword { d[k] = v }
            return function == .dict ? .dict(d) : .namespace(NamespaceObject(d))
        case .strftimeNow:
            let bound = try args.bind(["format"], for: "strftime_now()")
            guard case .string(let format)? = bound[0] else {
                throw loc.runtime("strftime_now() expects a format string, like strftime_now(\"%d %b %Y\")")
            }
            return .string(strftimeNow(format))
        case .cycler, .joiner, .lipsum:
            throw loc.unsupported("global function '\(function.rawValue)'")
        }
    }

    /// The local time formatted by C's strftime, as Python's `datetime.now().strftime(format)`.
    private func strftimeNow(_ format: String) -> String {
        var now = time(nil)
        var parts = tm()
        localtime_r(&now, &parts)
        var size = 256 + format.utf8.count * 16
        while size < 1 << 20 {
            var buffer = [CChar](repeating: 0, count: size)
            let n = strftime(&buffer, size, format, &parts)
            if n > 0 || format.isEmpty {
                return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            }
            size *= 4
        }
        return ""
    }

    // MARK: - Methods

    func callMethod(_ receiver: Value, _ name: String, _ args: Arguments) throws -> Value {
        let loc = args.location
        if Methods.mutating.contains(name) {
            switch receiver {
            case .dict, .list, .tuple:
                throw loc.runtime("access to attribute '\(name)' of '\(receiver.typeName)' object is unsafe "
                                  + "(chat templates render in an immutable sandbox)")
            default: break
            }
        }
        switch receiver {
        case .string(let s): return try stringMethod(s, name, args)
        case .dict(let d):
            switch name {
            case "get":
                let bound = try args.bind(["key", "default"], for: "get()")
                guard let key = bound[0] else { throw loc.runtime("get() expected at least 1 argument, got 0") }
                if case .string(let k) = key, let v = d[k] { return v }
                return bound[1] ?? .none
            case "items":
                _ = try args.bind([], for: "items()")
                return .list(zip(d.keys, d.values).map { .tuple([.string($0.0), $0.1]) })
            case "keys":
                _ = try args.bind([], for: "keys()")
                return .list(d.keys.map(Value.string))
            case "values":
                _ = try args.bind([], for: "values()")
                return .list(d.values)
            case "copy":
                _ = try args.bind([], for: "copy()")
                return receiver
            default: break
            }
        case .list(let a), .tuple(let a):
            switch name {
            case "count":
                let bound = try args.bind(["value"], for: "count()")
                return .int(a.filter { Value.equal($0, bound[0] ?? .none) }.count)
            case "index":
                let bound = try args.bind(["value"], for: "index()")
                if let i = a.firstIndex(where: { Value.equal($0, bound[0] ?? .none) }) { return .int(i) }
                throw loc.runtime("\((bound[0] ?? .none).pythonRepr) is not in \(receiver.typeName)")
            case "copy":
                return receiver
            default: break
            }
        case .loop(let l):
            if name == "cycle" {
                try args.noKeywords("loop.cycle()")
                guard !args.positional.isEmpty else { throw loc.runtime("no items for cycling given") }
                return args.positional[l.index0 % args.positional.count]
            }
        default: break
        }
        throw loc.unsupported("\(receiver.typeName) method '\(name)'")
    }

    private func optionalString(_ v: Value?, _ what: String, _ loc: SourceLocation) throws -> String? {
        switch v {
        case nil, .none?: return nil
        case .string(let s)?: return s
        case let other?: throw loc.runtime("\(what) must be str or None, not \(other.typeName)")
        }
    }

    private func requiredString(_ v: Value?, _ what: String, _ loc: SourceLocation) throws -> String {
        guard case .string(let s)? = v else {
            throw loc.runtime("\(what) must be str, not \(v?.typeName ?? "missing")")
        }
        return s
    }

    private func optionalInt(_ v: Value?, default fallback: Int, _ what: String, _ loc: SourceLocation) throws -> Int {
        switch v {
        case nil, .none?: return fallback
        case .int(let i)?: return i
        case .bool(let b)?: return b ? 1 : 0
        case let other?: throw loc.runtime("\(what) must be an integer, not \(other.typeName)")
        }
    }

    private func stringMethod(_ s: String, _ name: String, _ args: Arguments) throws -> Value {
        let loc = args.location
        let callee = "str.\(name)()"
        switch name {
        case "strip", "lstrip", "rstrip":
            let chars = try optionalString(try args.bind(["chars"], for: callee)[0], "\(name) arg", loc)
            return .string(PythonText.strip(s, chars: chars, leading: name != "rstrip", trailing: name != "lstrip"))
        case "upper": _ = try args.bind([], for: callee); return .string(PythonText.upper(s))
        case "lower": _ = try args.bind([], for: callee); return .string(PythonText.lower(s))
        case "title": _ = try args.bind([], for: callee); return .string(PythonText.title(s))
        case "capitalize": _ = try args.bind([], for: callee); return .string(PythonText.capitalize(s))
        case "startswith", "endswith":
            let bound = try args.bind(["prefix", "start", "end"], for: callee)
            var text = s
            if bound[1] != nil || bound[2] != nil {
                let start = bound[1] ?? .none, end = bound[2] ?? .none
                guard case .string(let sliced) = try slicedString(s, start, end, loc) else { return .bool(false) }
                text = sliced
            }
            var candidates: [String] = []
            switch bound[0] {
            case .string(let p)?: candidates = [p]
            case .tuple(let items)?, .list(let items)?:
                for item in items {
                    guard case .string(let p) = item else {
                        throw loc.runtime("tuple for \(name) must only contain str, not \(item.typeName)")
                    }
                    candidates.append(p)
                }
            default:
                throw loc.runtime("\(name) first arg must be str or a tuple of str")
            }
            let test = name == "startswith" ? PythonText.hasPrefix : PythonText.hasSuffix
            return .bool(candidates.contains { test(text, $0) })
        case "split", "rsplit":
            let bound = try args.bind(["sep", "maxsplit"], for: callee)
            let sep = try optionalString(bound[0], "separator", loc)
            if sep == "" { throw loc.runtime("empty separator") }
            let maxSplit = try optionalInt(bound[1], default: -1, "maxsplit", loc)
            let parts = name == "split" ? PythonText.split(s, separator: sep, maxSplit: maxSplit)
                : PythonText.rsplit(s, separator: sep, maxSplit: maxSplit)
            return .list(parts.map(Value.string))
        case "splitlines":
            let keep = (try args.bind(["keepends"], for: callee)[0])?.isTruthy ?? false
            return .list(PythonText.splitLines(s, keepEnds: keep).map(Value.string))
        case "replace":
            let bound = try args.bind(["old", "new", "count"], for: callee)
            let old = try requiredString(bound[0], "replace() argument 1", loc)
            let new = try requiredString(bound[1], "replace() argument 2", loc)
            let count = try optionalInt(bound[2], default: -1, "count", loc)
            return .string(PythonText.replace(s, old, new, count: count))
        case "find", "rfind", "index", "rindex", "count":
            let bound = try args.bind(["sub"], for: callee)
            let sub = PythonText.scalars(try requiredString(bound[0], "\(name)() argument", loc))
            let hay = PythonText.scalars(s)
            if name == "count" {
                return .int(sub.isEmpty ? hay.count + 1 : PythonText.occurrences(sub, in: hay).count)
            }
            var found: Int?
            if sub.isEmpty {
                found = name.hasPrefix("r") ? hay.count : 0
            } else if name.hasPrefix("r") {
                var i = hay.count - sub.count
                while i >= 0 {
                    if hay[i..<(i + sub.count)].elementsEqual(sub) {
                        found = i
                        break
                    }
                    i -= 1
                }
            } else {
                found = PythonText.occurrences(sub, in: hay, limit: 1).first
            }
            if let found { return .int(found) }
            if name.hasSuffix("index") { throw loc.runtime("substring not found") }
            return .int(-1)
        case "join":
            let bound = try args.bind(["iterable"], for: callee)
            var parts: [String] = []
            for (i, item) in try iterate(bound[0] ?? .none, at: loc).enumerated() {
                guard case .string(let p) = item else {
                    throw loc.runtime("sequence item \(i): expected str instance, \(item.typeName) found")
                }
                parts.append(p)
            }
            return .string(parts.joined(separator: s))
        case "removeprefix", "removesuffix":
            let affix = try requiredString(try args.bind(["affix"], for: callee)[0], "\(name)() argument", loc)
            if name == "removeprefix" {
                guard !affix.isEmpty, PythonText.hasPrefix(s, affix) else { return .string(s) }
                return .string(String(Substring(s.unicodeScalars.dropFirst(affix.unicodeScalars.count))))
            }
            guard !affix.isEmpty, PythonText.hasSuffix(s, affix) else { return .string(s) }
            return .string(String(Substring(s.unicodeScalars.dropLast(affix.unicodeScalars.count))))
        case "partition", "rpartition":
            let sep = try requiredString(try args.bind(["sep"], for: callee)[0], "\(name)() argument", loc)
            if sep.isEmpty { throw loc.runtime("empty separator") }
            let parts = name == "partition" ? PythonText.split(s, separator: sep, maxSplit: 1)
                : PythonText.rsplit(s, separator: sep, maxSplit: 1)
            if parts.count == 2 { return .tuple([.string(parts[0]), .string(sep), .string(parts[1])]) }
            return name == "partition" ? .tuple([.string(s), .string(""), .string("")])
                : .tuple([.string(""), .string(""), .string(s)])
        case "isspace", "isalpha", "isdigit", "isdecimal", "isnumeric", "isalnum", "isascii", "islower", "isupper":
            _ = try args.bind([], for: callee)
            return .bool(characterTest(name, s))
        default:
            throw loc.unsupported("str method '\(name)'")
        }
    }

    private func slicedString(_ s: String, _ start: Value, _ end: Value, _ loc: SourceLocation) throws -> Value {
        let scalars = PythonText.scalars(s)
        func clamp(_ v: Value, _ fallback: Int) throws -> Int {
            if case .none = v { return fallback }
            let i = try optionalInt(v, default: fallback, "slice index", loc)
            return i < 0 ? max(0, i + scalars.count) : min(i, scalars.count)
        }
        let a = try clamp(start, 0), b = try clamp(end, scalars.count)
        guard a <= scalars.count else { return .none }
        return .string(a < b ? makeString(scalars[a..<b]) : "")
    }

    /// `str.isspace()`, `isalpha()`, ... : true when the string is non-empty and every code point
    /// passes (for `islower`/`isupper`: no code point of the other case, and at least one cased).
    private func characterTest(_ name: String, _ s: String) -> Bool {
        let scalars = s.unicodeScalars
        if name == "isascii" { return scalars.allSatisfy(\.isASCII) }
        guard !scalars.isEmpty else { return false }
        func isLetter(_ c: Unicode.Scalar) -> Bool {
            switch c.properties.generalCategory {
            case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return true
            default: return false
            }
        }
        func isDecimal(_ c: Unicode.Scalar) -> Bool { c.properties.numericType == .decimal }
        func isDigit(_ c: Unicode.Scalar) -> Bool {
            c.properties.numericType == .decimal || c.properties.numericType == .digit
        }
        func isNumeric(_ c: Unicode.Scalar) -> Bool { c.properties.numericType != nil }
        switch name {
        case "isspace": return scalars.allSatisfy(PythonText.isWhitespace)
        case "isalpha": return scalars.allSatisfy(isLetter)
        case "isdigit": return scalars.allSatisfy(isDigit)
        case "isdecimal": return scalars.allSatisfy(isDecimal)
        case "isnumeric": return scalars.allSatisfy(isNumeric)
        case "isalnum": return scalars.allSatisfy { isLetter($0) || isNumeric($0) }
        case "islower", "isupper":
            var sawCased = false
            for c in scalars {
                let p = c.properties
                let upperLike = p.isUppercase || p.generalCategory == .titlecaseLetter
                if name == "islower" ? upperLike : (p.isLowercase || p.generalCategory == .titlecaseLetter) {
                    return false
                }
                if name == "islower" ? p.isLowercase : p.isUppercase { sawCased = true }
            }
            return sawCased
        default: return false
        }
    }
}
