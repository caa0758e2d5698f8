/// `json.dumps` as transformers' `tojson` filter calls it:
/// `json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`.
///
/// Strings escape `"`, `\`, `\n`, `\r`, `\t`, `\b`, `\f` and other code points below U+0020 as
/// `\u00XX` (lower-case hex); everything else is kept unless `ensureASCII`. Floats use Python's
/// `repr` (`Infinity`, `NaN` for the non-finite ones). With an indent, items go on their own lines
/// and the default item separator loses its space (`","`).
struct PythonJSON {
    var ensureASCII = false
    /// The text repeated per nesting level, or nil for one line.
    var indent: String?
    var itemSeparator = ", "
    var keySeparator = ": "
    var sortKeys = false

    /// Why a value cannot be encoded (Python's `TypeError` text).
    struct Failure: Error {
        let message: String
    }

    func encode(_ value: Value) throws -> String {
        var out = ""
        try write(value, level: 0, into: &out)
        return out
    }

    private func newline(_ level: Int, into out: inout String) {
        guard let indent else { return }
        out += "\n"
        for _ in 0..<level { out += indent }
    }

    private func write(_ value: Value, level: Int, into out: inout String) throws {
        switch value {
        case .none: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .int(let i): out += String(i)
        case .double(let d):
            if d.isNaN { out += "NaN" } else if d.isInfinite { out += d < 0 ? "-Infinity" : "Infinity" } else {
                out += PythonText.floatRepr(d)
            }
        case .string(let s): writeString(s, into: &out)
        case .list(let items), .tuple(let items):
            if items.isEmpty {
                out += "[]"
                return
            }
            out += "["
            for (i, item) in items.enumerated() {
                if i > 0 { out += itemSeparator }
                newline(level + 1, into: &out)
                try write(item, level: level + 1, into: &out)
            }
            newline(level, into: &out)
            out += "]"
        case .dict(let d):
            if d.count == 0 {
                out += "{}"
                return
            }
            var order = Array(0..<d.count)
            if sortKeys { order.sort { PythonText.compare(d.keys[$0], d.keys[$1]) < 0 } }
            out += "{"
            for (n, i) in order.enumerated() {
                if n > 0 { out += itemSeparator }
                newline(level + 1, into: &out)
                writeString(d.keys[i], into: &out)
                out += keySeparator
                try write(d.values[i], level: level + 1, into: &out)
            }
            newline(level, into: &out)
            out += "}"
        default:
            throw Failure(message: "Object of type \(value.typeName) is not JSON serializable")
        }
    }

    private func writeString(_ s: String, into out: inout String) {
        var view = String.UnicodeScalarView()
        view.append("\"")
        func hex4(_ v: UInt32) {
            let h = String(v, radix: 16)
            view.append(contentsOf: ("\\u" + String(repeating: "0", count: 4 - h.count) + h).unicodeScalars)
        }
        for c in s.unicodeScalars {
            switch c {
            case "\"": view.append(contentsOf: "\\\"".unicodeScalars)
            case "\\": view.append(contentsOf: "\\\\".unicodeScalars)
            case "\n": view.append(contentsOf: "\\n".unicodeScalars)
            case "\r": view.append(contentsOf: "\\r".unicodeScalars)
            case "\t": view.append(contentsOf: "\\t".unicodeScalars)
            case "\u{08}": view.append(contentsOf: "\\b".unicodeScalars)
            case "\u{0C}": view.append(contentsOf: "\\f".unicodeScalars)
            default:
                if c.value < 0x20 {
                    hex4(c.value)
                } else if ensureASCII && c.value > 0x7E {
                    if c.value > 0xFFFF {
                        let v = c.value - 0x10000
                        hex4(0xD800 + (v >> 10))
                        hex4(0xDC00 + (v & 0x3FF))
                    } else {
                        hex4(c.value)
                    }
                } else {
                    view.append(c)
                }
            }
        }
        view.append("\"")
        out.unicodeScalars.append(contentsOf: view)
    }
}
