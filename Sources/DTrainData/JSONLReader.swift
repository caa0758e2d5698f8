import Foundation

/// Errors reading a JSONL file, each naming `file:line`.
public enum JSONLError: Error, CustomStringConvertible {
    case cannotOpen(file: String, reason: String)
    case invalidJSON(file: String, line: Int, reason: String)
    case notAnObject(file: String, line: Int)
    case missingField(file: String, line: Int, field: String, expected: String)
    case empty(file: String)

    public var description: String {
        switch self {
        case .cannotOpen(let f, let r): return "\(f): cannot open (\(r))"
        case .invalidJSON(let f, let l, let r): return "\(f):\(l): invalid JSON (\(r)); each line must be one JSON object"
        case .notAnObject(let f, let l): return "\(f):\(l): expected a JSON object, like {\"text\": \"...\"}"
        case .missingField(let f, let l, let field, let expected):
            return "\(f):\(l): missing or wrong-typed field \"\(field)\" (expected \(expected))"
        case .empty(let f): return "\(f): no records (the file is empty or holds only blank lines)"
        }
    }
}

/// Reads JSON Lines from a file or standard input, one object per non-blank line.
public struct JSONLReader {
    /// Name used in errors (`<stdin>` for standard input).
    public let name: String
    private let data: Data

    /// Reads all of `path`, or standard input when `path` is nil or "-".
    public init(path: String?) throws {
        if let path, path != "-" {
            name = path
            do { data = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped) } catch {
                throw JSONLError.cannotOpen(file: path, reason: error.localizedDescription)
            }
        } else {
            name = "<stdin>"
            data = FileHandle.standardInput.readDataToEndOfFile()
        }
    }

    /// Every record as (1-based line number, parsed object), in file order.
    public func objects() throws -> [(line: Int, object: [String: Any])] {
        var out: [(Int, [String: Any])] = []
        var lineNo = 0
        var start = data.startIndex
        while start < data.endIndex {
            let end = data[start...].firstIndex(of: UInt8(ascii: "\n")) ?? data.endIndex
            lineNo += 1
            let line = data[start..<end]
            start = end < data.endIndex ? data.index(after: end) : end
            if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) { continue }
            let parsed: Any
            do { parsed = try JSONSerialization.jsonObject(with: Data(line)) } catch {
                throw JSONLError.invalidJSON(file: name, line: lineNo, reason: (error as NSError).localizedDescription)
            }
            guard let obj = parsed as? [String: Any] else { throw JSONLError.notAnObject(file: name, line: lineNo) }
            out.append((lineNo, obj))
        }
        if out.isEmpty { throw JSONLError.empty(file: name) }
        return out
    }

    /// The `text` field of every record.
    public func texts() throws -> [(line: Int, text: String)] {
        try objects().map { rec in
            guard let text = rec.object["text"] as? String else {
                throw JSONLError.missingField(file: name, line: rec.line, field: "text", expected: "a string")
            }
            return (rec.line, text)
        }
    }
}
