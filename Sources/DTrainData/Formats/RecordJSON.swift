// A small JSON parser for one JSONL line, made for the records training data holds (objects of
// strings and arrays of objects: no boxing into NSDictionary as JSONSerialization does), with errors that say
// where the line goes wrong. Strict RFC 8259: no comments, no trailing commas, no raw control
// characters inside strings, no NaN. The line must already be valid UTF-8 (`UTF8Check`).

import Foundation

/// A parsed JSON value.
public enum RecordJSON: Sendable, Hashable {
    case string(String)
    case number(Double)
    case bool(Bool)
    case null
    case array([RecordJSON])
    /// Members in file order (a repeated key keeps every occurrence; lookups take the last).
    case object([RecordJSONMember])

    /// "a string", "an array", ... for error messages.
    public var typeName: String {
        switch self {
        case .string: return "a string"
        case .number: return "a number"
        case .bool: return "a boolean"
        case .null: return "null"
        case .array: return "an array"
        case .object: return "an object"
        }
    }

    /// The value of the last member named `key`, if this is an object that has one.
    public subscript(key: String) -> RecordJSON? {
        guard case .object(let members) = self else { return nil }
        return members.last { $0.key == key }?.value
    }
}

/// One `"key": value` of a JSON object.
extension RecordJSON {
    /// Compact JSON with keys in record order: one text per value, for hashing.
    public var canonicalText: String {
        switch self {
        case .string(let s): return "\"" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
        case .number(let d): return "\(d)"
        case .bool(let b): return b ? "true" : "false"
        case .null: return "null"
        case .array(let items): return "[" + items.map(\.canonicalText).joined(separator: ",") + "]"
        case .object(let members): return "{" + members.map { RecordJSON.string($0.key).canonicalText + ":" + $0.value.canonicalText }.joined(separator: ",") + "}"
        }
    }
}

public struct RecordJSONMember: Sendable, Hashable {
    public var key: String
    public var value: RecordJSON
}

/// Where and why a line is not JSON.
public struct RecordJSONError: Error, Sendable, CustomStringConvertible {
    /// 1-based byte offset in the line.
    public let column: Int
    public let message: String
    public var description: String { "\(message) at column \(column)" }
}

/// Parses one JSON document from a byte buffer.
public struct RecordJSONParser {
    private let p: UnsafePointer<UInt8>
    private let n: Int
    private var i = 0
    private var depth = 0
    private var scratch: [UInt8] = []
    private static let maxDepth = 128

    private init(_ p: UnsafePointer<UInt8>, _ n: Int) {
        self.p = p
        self.n = n
    }

    /// Parses `bytes` (valid UTF-8) as exactly one JSON value with optional surrounding whitespace.
    public static func parse(_ bytes: UnsafeRawBufferPointer) throws -> RecordJSON {
        guard let base = bytes.baseAddress, bytes.count > 0 else {
            throw RecordJSONError(column: 1, message: "empty line")
        }
        var parser = RecordJSONParser(base.assumingMemoryBound(to: UInt8.self), bytes.count)
        parser.skipSpace()
        let value = try parser.parseValue()
        parser.skipSpace()
        if parser.i < parser.n { throw parser.error("extra data after the JSON value") }
        return value
    }

    /// Parses a JSON string held in a Swift String.
    public static func parse(_ text: String) throws -> RecordJSON {
        var text = text
        return try text.withUTF8 { try parse(UnsafeRawBufferPointer($0)) }
    }

    private func error(_ message: String) -> RecordJSONError {
        RecordJSONError(column: i + 1, message: message)
    }

    @inline(__always)
    private mutating func skipSpace() {
        while i < n {
            let b = p[i]
            guard b == 0x20 || b == 0x0A || b == 0x0D || b == 0x09 else { return }
            i += 1
        }
    }

    private func describe(_ b: UInt8) -> String {
        b >= 0x20 && b < 0x7F ? "'\(Character(Unicode.Scalar(b)))'" : String(format: "byte 0x%02X", b)
    }

    private mutating func parseValue() throws -> RecordJSON {
        guard i < n else { throw error("expected a value, found the end of the line") }
        switch p[i] {
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "{"): return try parseObject()
        case UInt8(ascii: "["): return try parseArray()
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try parseNumber())
        default: throw error("expected a value, found \(describe(p[i]))")
        }
    }

    private mutating func literal(_ word: StaticString) throws {
        let len = word.utf8CodeUnitCount
        let w = word.utf8Start
        guard n - i >= len, (0..<len).allSatisfy({ p[i + $0] == w[$0] }) else {
            throw error("expected a value, found \(describe(p[i]))")
        }
        i += len
    }

    private mutating func enter() throws {
        depth += 1
        if depth > RecordJSONParser.maxDepth { throw error("nested deeper than \(RecordJSONParser.maxDepth) levels") }
    }

    private mutating func parseObject() throws -> RecordJSON {
        try enter()
        defer { depth -= 1 }
        i += 1
        var members = [RecordJSONMember]()
        skipSpace()
        if i < n && p[i] == UInt8(ascii: "}") { i += 1; return .object(members) }
        while true {
            skipSpace()
            guard i < n, p[i] == UInt8(ascii: "\"") else {
                throw error(i < n ? "expected a key in double quotes, found \(describe(p[i]))" : "unterminated object")
            }
            let key = try parseString()
            skipSpace()
            guard i < n, p[i] == UInt8(ascii: ":") else {
                throw error(i < n ? "expected ':' after key \"\(key)\", found \(describe(p[i]))" : "unterminated object")
            }
            i += 1
            skipSpace()
            let value = try parseValue()
            members.append(RecordJSONMember(key: key, value: value))
            skipSpace()
            guard i < n else { throw error("unterminated object (expected ',' or '}')") }
            if p[i] == UInt8(ascii: ",") { i += 1; continue }
            if p[i] == UInt8(ascii: "}") { i += 1; return .object(members) }
            throw error("expected ',' or '}' after a value, found \(describe(p[i]))")
        }
    }

    private mutating func parseArray() throws -> RecordJSON {
        try enter()
        defer { depth -= 1 }
        i += 1
        var items = [RecordJSON]()
        skipSpace()
        if i < n && p[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
        while true {
            skipSpace()
            items.append(try parseValue())
            skipSpace()
            guard i < n else { throw error("unterminated array (expected ',' or ']')") }
            if p[i] == UInt8(ascii: ",") { i += 1; continue }
            if p[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
            throw error("expected ',' or ']' after a value, found \(describe(p[i]))")
        }
    }

    private mutating func parseNumber() throws -> Double {
        let start = i
        if p[i] == UInt8(ascii: "-") { i += 1 }
        func digits() -> Int {
            let s = i
            while i < n && p[i] >= 0x30 && p[i] <= 0x39 { i += 1 }
            return i - s
        }
        guard i < n else { throw error("expected digits") }
        if p[i] == UInt8(ascii: "0") {
            i += 1
        } else if digits() == 0 {
            throw error("expected digits")
        }
        if i < n && p[i] == UInt8(ascii: ".") {
            i += 1
            if digits() == 0 { throw error("expected digits after '.'") }
        }
        if i < n && (p[i] == UInt8(ascii: "e") || p[i] == UInt8(ascii: "E")) {
            i += 1
            if i < n && (p[i] == UInt8(ascii: "+") || p[i] == UInt8(ascii: "-")) { i += 1 }
            if digits() == 0 { throw error("expected digits in the exponent") }
        }
        let text = String(decoding: UnsafeBufferPointer(start: p + start, count: i - start), as: UTF8.self)
        return Double(text) ?? .nan
    }

    /// Parses a string starting at its opening quote.
    private mutating func parseString() throws -> String {
        i += 1
        let start = i
        // Fast path: no escapes.
        while i < n {
            let b = p[i]
            if b == UInt8(ascii: "\"") {
                let s = String(decoding: UnsafeBufferPointer(start: p + start, count: i - start), as: UTF8.self)
                i += 1
                return s
            }
            if b == UInt8(ascii: "\\") || b < 0x20 { break }
            i += 1
        }
        scratch.removeAll(keepingCapacity: true)
        scratch.append(contentsOf: UnsafeBufferPointer(start: p + start, count: i - start))
        while i < n {
            let b = p[i]
            if b == UInt8(ascii: "\"") {
                i += 1
                return String(decoding: scratch, as: UTF8.self)
            }
            if b < 0x20 {
                throw error(String(format: "raw control character U+%04X inside a string (escape it, e.g. \\n)", b))
            }
            if b != UInt8(ascii: "\\") {
                scratch.append(b)
                i += 1
                continue
            }
            i += 1
            guard i < n else { break }
            let e = p[i]
            i += 1
            switch e {
            case UInt8(ascii: "\""): scratch.append(0x22)
            case UInt8(ascii: "\\"): scratch.append(0x5C)
            case UInt8(ascii: "/"): scratch.append(0x2F)
            case UInt8(ascii: "b"): scratch.append(0x08)
            case UInt8(ascii: "f"): scratch.append(0x0C)
            case UInt8(ascii: "n"): scratch.append(0x0A)
            case UInt8(ascii: "r"): scratch.append(0x0D)
            case UInt8(ascii: "t"): scratch.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = try hex4()
                if (0xD800..<0xDC00).contains(scalar) {
                    guard n - i >= 6, p[i] == UInt8(ascii: "\\"), p[i + 1] == UInt8(ascii: "u") else {
                        throw error(String(format: "lone UTF-16 surrogate \\u%04X (no low surrogate follows)", scalar))
                    }
                    i += 2
                    let low = try hex4()
                    guard (0xDC00..<0xE000).contains(low) else {
                        throw error(String(format: "\\u%04X is not a low surrogate after \\u%04X", low, scalar))
                    }
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                } else if (0xDC00..<0xE000).contains(scalar) {
                    throw error(String(format: "lone UTF-16 surrogate \\u%04X", scalar))
                }
                appendUTF8(scalar)
            default:
                i -= 1
                throw error("invalid escape \\\(describe(e))")
            }
        }
        throw error("unterminated string")
    }

    private mutating func hex4() throws -> UInt32 {
        guard n - i >= 4 else { throw error("truncated \\u escape") }
        var v: UInt32 = 0
        for k in 0..<4 {
            let c = p[i + k]
            let d: UInt32
            switch c {
            case 0x30...0x39: d = UInt32(c - 0x30)
            case 0x41...0x46: d = UInt32(c - 0x41 + 10)
            case 0x61...0x66: d = UInt32(c - 0x61 + 10)
            default: throw error("invalid hex digit in \\u escape")
            }
            v = v << 4 | d
        }
        i += 4
        return v
    }

    private mutating func appendUTF8(_ s: UInt32) {
        switch s {
        case 0..<0x80:
            scratch.append(UInt8(s))
        case 0x80..<0x800:
            scratch.append(UInt8(0xC0 | s >> 6)); scratch.append(UInt8(0x80 | s & 0x3F))
        case 0x800..<0x10000:
            scratch.append(UInt8(0xE0 | s >> 12)); scratch.append(UInt8(0x80 | (s >> 6) & 0x3F))
            scratch.append(UInt8(0x80 | s & 0x3F))
        default:
            scratch.append(UInt8(0xF0 | s >> 18)); scratch.append(UInt8(0x80 | (s >> 12) & 0x3F))
            scratch.append(UInt8(0x80 | (s >> 6) & 0x3F)); scratch.append(UInt8(0x80 | s & 0x3F))
        }
    }
}

/// UTF-8 validation (Unicode 15, table 3-7: no overlongs, no surrogates, nothing past U+10FFFF).
public enum UTF8Check {
    /// The 0-based offset of the first byte that starts an invalid sequence, or nil when valid.
    public static func firstInvalidByte(_ bytes: UnsafeRawBufferPointer) -> Int? {
        guard let raw = bytes.baseAddress else { return nil }
        let p = raw.assumingMemoryBound(to: UInt8.self)
        let n = bytes.count
        var i = 0
        while i < n {
            // ASCII, eight bytes at a time.
            while i + 8 <= n && raw.loadUnaligned(fromByteOffset: i, as: UInt64.self) & 0x8080_8080_8080_8080 == 0 {
                i += 8
            }
            guard i < n else { break }
            let b = p[i]
            if b < 0x80 { i += 1; continue }
            let len: Int
            var lo: UInt8 = 0x80, hi: UInt8 = 0xBF
            switch b {
            case 0xC2...0xDF: len = 2
            case 0xE0: len = 3; lo = 0xA0
            case 0xE1...0xEC, 0xEE...0xEF: len = 3
            case 0xED: len = 3; hi = 0x9F
            case 0xF0: len = 4; lo = 0x90
            case 0xF1...0xF3: len = 4
            case 0xF4: len = 4; hi = 0x8F
            default: return i
            }
            guard i + len <= n else { return i }
            let b1 = p[i + 1]
            guard b1 >= lo && b1 <= hi else { return i }
            for k in 2..<len {
                guard p[i + k] & 0xC0 == 0x80 else { return i }
            }
            i += len
        }
        return nil
    }
}
