/// A mapping that keeps insertion order, like a Python dict. Lookups are linear: template mappings
/// (messages, tool calls, namespaces) hold a handful of keys.
struct OrderedDict {
    var keys: [String] = []
    var values: [Value] = []

    var count: Int { keys.count }

    func index(of key: String) -> Int? {
        keys.firstIndex { PythonText.equal($0, key) }
    }

    subscript(key: String) -> Value? {
        get { index(of: key).map { values[$0] } }
        set {
            if let i = index(of: key) {
                if let newValue { values[i] = newValue } else {
                    keys.remove(at: i)
                    values.remove(at: i)
                }
            } else if let newValue {
                keys.append(key)
                values.append(newValue)
            }
        }
    }
}

/// What `namespace(...)` returns: the one mutable object a template may change (`set ns.x = ...`).
final class NamespaceObject {
    var attributes: OrderedDict

    init(_ attributes: OrderedDict) { self.attributes = attributes }
}

/// The `loop` variable inside a `for` body.
final class LoopContext {
    let items: [Value]
    var index0 = 0

    init(items: [Value]) { self.items = items }

    /// `loop.<name>`, or nil for a name the loop object does not have.
    func attribute(_ name: String) -> Value? {
        let length = items.count
        switch name {
        case "index": return .int(index0 + 1)
        case "index0": return .int(index0)
        case "revindex": return .int(length - index0)
        case "revindex0": return .int(length - index0 - 1)
        case "first": return .bool(index0 == 0)
        case "last": return .bool(index0 == length - 1)
        case "length": return .int(length)
        case "depth": return .int(1)
        case "depth0": return .int(0)
        case "previtem":
            return index0 > 0 ? items[index0 - 1] : .undefined("there is no previous item")
        case "nextitem":
            return index0 + 1 < length ? items[index0 + 1] : .undefined("there is no next item")
        case "cycle", "changed": return .method(.loop(self), name)
        default: return nil
        }
    }
}

/// Functions a template can call by name.
enum BuiltinFunction: String {
    case range, namespace, dict
    case raiseException = "raise_exception"
    case strftimeNow = "strftime_now"
    /// jinja2 globals this renderer does not implement; calling one is an `.unsupported` error.
    case cycler, joiner, lipsum
}

/// A value while a template runs, with Python's semantics (jinja2 evaluates Python objects).
enum Value {
    /// jinja2's default `Undefined`: renders as "", is falsy, iterates as empty, and fails on
    /// arithmetic, comparison, attribute or item access. The payload explains what was missing.
    case undefined(String)
    case none
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case list([Value])
    case tuple([Value])
    case dict(OrderedDict)
    case namespace(NamespaceObject)
    case loop(LoopContext)
    case function(BuiltinFunction)
    /// A method looked up on a value (`message.get`, `text.strip`), called later.
    indirect case method(Value, String)

    init(_ value: TemplateValue) {
        switch value {
        case .null: self = .none
        case .bool(let b): self = .bool(b)
        case .int(let i): self = .int(i)
        case .double(let d): self = .double(d)
        case .string(let s): self = .string(s)
        case .array(let a): self = .list(a.map(Value.init))
        case .object(let entries):
            var d = OrderedDict()
            for e in entries { d[e.key] = Value(e.value) }
            self = .dict(d)
        }
    }

    var isUndefined: Bool {
        if case .undefined = self { return true }
        return false
    }

    /// Python truthiness.
    var isTruthy: Bool {
        switch self {
        case .undefined, .none: return false
        case .bool(let b): return b
        case .int(let i): return i != 0
        case .double(let d): return d != 0
        case .string(let s): return !s.isEmpty
        case .list(let a), .tuple(let a): return !a.isEmpty
        case .dict(let d): return d.count > 0
        case .namespace, .loop, .function, .method: return true
        }
    }

    /// The Python type name used in error messages (`str`, `int`, `NoneType`, ...).
    var typeName: String {
        switch self {
        case .undefined: return "Undefined"
        case .none: return "NoneType"
        case .bool: return "bool"
        case .int: return "int"
        case .double: return "float"
        case .string: return "str"
        case .list: return "list"
        case .tuple: return "tuple"
        case .dict: return "dict"
        case .namespace: return "Namespace"
        case .loop: return "LoopContext"
        case .function: return "builtin_function_or_method"
        case .method: return "builtin_function_or_method"
        }
    }

    /// Python's `str(value)`; undefined gives "".
    var pythonString: String {
        switch self {
        case .undefined: return ""
        case .string(let s): return s
        default: return pythonRepr
        }
    }

    /// Python's `repr(value)`.
    var pythonRepr: String {
        switch self {
        case .undefined: return "Undefined"
        case .none: return "None"
        case .bool(let b): return b ? "True" : "False"
        case .int(let i): return String(i)
        case .double(let d): return PythonText.floatRepr(d)
        case .string(let s): return PythonText.repr(s)
        case .list(let a): return "[" + a.map(\.pythonRepr).joined(separator: ", ") + "]"
        case .tuple(let a):
            if a.count == 1 { return "(" + a[0].pythonRepr + ",)" }
            return "(" + a.map(\.pythonRepr).joined(separator: ", ") + ")"
        case .dict(let d): return Value.dictRepr(d)
        case .namespace(let ns): return "<Namespace " + Value.dictRepr(ns.attributes) + ">"
        case .loop(let l): return "<LoopContext \(l.index0 + 1)/\(l.items.count)>"
        case .function(let f): return "<built-in function \(f.rawValue)>"
        case .method(let receiver, let name): return "<built-in method \(name) of \(receiver.typeName) object>"
        }
    }

    private static func dictRepr(_ d: OrderedDict) -> String {
        var parts: [String] = []
        for (k, v) in zip(d.keys, d.values) { parts.append(PythonText.repr(k) + ": " + v.pythonRepr) }
        return "{" + parts.joined(separator: ", ") + "}"
    }

    /// The number for arithmetic: bools count as 0/1, as in Python.
    var numeric: Numeric? {
        switch self {
        case .bool(let b): return .int(b ? 1 : 0)
        case .int(let i): return .int(i)
        case .double(let d): return .double(d)
        default: return nil
        }
    }

    enum Numeric {
        case int(Int)
        case double(Double)

        var double: Double {
            switch self {
            case .int(let i): return Double(i)
            case .double(let d): return d
            }
        }
    }

    /// Python `==`.
    static func equal(_ a: Value, _ b: Value) -> Bool {
        switch (a, b) {
        case (.undefined, .undefined), (.none, .none): return true
        case (.string(let x), .string(let y)): return PythonText.equal(x, y)
        case (.list(let x), .list(let y)), (.tuple(let x), .tuple(let y)):
            return x.count == y.count && zip(x, y).allSatisfy { equal($0, $1) }
        case (.dict(let x), .dict(let y)):
            guard x.count == y.count else { return false }
            for (k, v) in zip(x.keys, x.values) {
                guard let w = y[k], equal(v, w) else { return false }
            }
            return true
        case (.namespace(let x), .namespace(let y)): return x === y
        case (.loop(let x), .loop(let y)): return x === y
        case (.function(let x), .function(let y)): return x == y
        default:
            if let x = a.numeric, let y = b.numeric {
                switch (x, y) {
                case (.int(let i), .int(let j)): return i == j
                default: return x.double == y.double
                }
            }
            return false
        }
    }

    /// Python ordering (`<`) as -1, 0 or 1; nil when Python would raise `TypeError`.
    static func compare(_ a: Value, _ b: Value) -> Int? {
        if let x = a.numeric, let y = b.numeric {
            switch (x, y) {
            case (.int(let i), .int(let j)): return i < j ? -1 : (i == j ? 0 : 1)
            default:
                let p = x.double, q = y.double
                if p < q { return -1 }
                if p > q { return 1 }
                return 0  // also NaN: every comparison false
            }
        }
        switch (a, b) {
        case (.string(let x), .string(let y)): return PythonText.compare(x, y)
        case (.list(let x), .list(let y)), (.tuple(let x), .tuple(let y)):
            for (p, q) in zip(x, y) where !equal(p, q) { return compare(p, q) }
            return x.count < y.count ? -1 : (x.count == y.count ? 0 : 1)
        default: return nil
        }
    }
}
