// Reading a JSONL training file into validated `DataRecord`s, one result per non-blank line.
//
// Each line goes through: size limit -> UTF-8 check -> JSON parse -> must be an object -> column
// mapping (rename keys) -> format (given, or detected from the file's first record with a known
// shape) -> fields of that format, each checked for presence, type and emptiness -> role mapping
// and role check for chat messages. The first failing step gives the line's `RecordProblem`.
// Blank lines are not records; a file without records gives one `emptyFile` problem.

import Foundation

/// How to read records.
public struct ReaderOptions: Sendable, Equatable {
    /// The format of every record; nil detects it per file from the first record with a known shape.
    public var format: RecordFormat?
    /// Renames keys before decoding, source name -> format name: ["question": "prompt"]. Applies
    /// to record keys and to the keys of chat messages (["from": "role", "value": "content"]).
    public var columns: [String: String]
    /// Renames chat roles before they are checked: ["human": "user", "gpt": "assistant"].
    public var roles: [String: String]
    /// Longest line accepted, in bytes.
    public var maxLineBytes: Int

    public init(format: RecordFormat? = nil, columns: [String: String] = [:], roles: [String: String] = [:],
                maxLineBytes: Int = 1 << 20) {
        self.format = format
        self.columns = columns
        self.roles = roles
        self.maxLineBytes = maxLineBytes
    }
}

/// One non-blank line of a data file (`bytes` is valid only inside the callback that gets it).
public struct DataLine {
    /// 1-based line number (0 for the file-level `emptyFile` problem).
    public let number: Int
    /// The line without its newline (and without a trailing CR).
    public let bytes: UnsafeRawBufferPointer
}

/// Reads one JSONL (or .jsonl.gz) file of training records.
///
/// ```swift
/// var reader = try DataRecordReader(path: "train.jsonl")
/// try reader.forEachRecord { line, result in
///     switch result {
///     case .success(let record): ...
///     case .failure(let error): print(error)   // "train.jsonl:17: missing field \"completion\" ..."
///     }
/// }
/// ```
public struct DataRecordReader {
    /// The file name used in locations.
    public let path: String
    public let options: ReaderOptions
    /// The file's (decompressed) contents.
    public let bytes: Data
    /// The format of the file's records: the given one, or the one detected (nil until a record
    /// with a known shape has been read).
    public private(set) var format: RecordFormat?
    /// Non-blank lines read by the last `forEachRecord`.
    public private(set) var lineCount = 0

    /// Opens `path` ("-" = standard input); gzip is detected by its magic bytes.
    public init(path: String, options: ReaderOptions = ReaderOptions()) throws {
        self.init(name: path, bytes: try DataFileBytes.read(path: path), options: options)
    }

    /// Reads records from bytes already in memory; `name` is used in locations.
    public init(name: String, bytes: Data, options: ReaderOptions = ReaderOptions()) {
        self.path = name
        self.bytes = bytes
        self.options = options
        self.format = options.format
    }

    /// Calls `body` for every non-blank line, in file order, with the decoded record or its problem.
    /// A file with no records gives one `emptyFile` failure (line 0, empty bytes).
    public mutating func forEachRecord(_ body: (DataLine, Result<DataRecord, RecordError>) throws -> Void) rethrows {
        format = options.format
        lineCount = 0
        let data = bytes
        try data.withUnsafeBytes { (all: UnsafeRawBufferPointer) in
            var lineNo = 0
            var records = 0
            let n = all.count
            // A UTF-8 byte-order mark (Excel, Notepad) before the first line is skipped.
            var start = n >= 3 && all[0] == 0xEF && all[1] == 0xBB && all[2] == 0xBF ? 3 : 0
            let base = all.baseAddress
            while start < n, let base {
                let rest = n - start
                let nl = memchr(base + start, 0x0A, rest)
                let end = nl.map { base.distance(to: UnsafeRawPointer($0)) } ?? n
                lineNo += 1
                var stop = end
                if stop > start && all[stop - 1] == 0x0D { stop -= 1 }
                let line = UnsafeRawBufferPointer(start: base + start, count: stop - start)
                start = end + 1
                if isBlank(line) { continue }
                records += 1
                let result = decodeLine(line, number: lineNo)
                try body(DataLine(number: lineNo, bytes: line), result)
            }
            lineCount = records
            if records == 0 {
                let error = RecordError(RecordLocation(file: path, line: 0), .emptyFile)
                try body(DataLine(number: 0, bytes: UnsafeRawBufferPointer(start: nil, count: 0)), .failure(error))
            }
        }
    }

    /// Every record, in file order, as (line, result).
    public mutating func readAll() -> [(line: Int, result: Result<DataRecord, RecordError>)] {
        var out = [(line: Int, result: Result<DataRecord, RecordError>)]()
        forEachRecord { line, result in out.append((line.number, result)) }
        return out
    }

    private func isBlank(_ line: UnsafeRawBufferPointer) -> Bool {
        for b in line where !(b == 0x20 || b == 0x09 || b == 0x0D) { return false }
        return true
    }

    /// Decodes one line into a record.
    public mutating func decodeLine(_ line: UnsafeRawBufferPointer, number: Int) -> Result<DataRecord, RecordError> {
        let location = RecordLocation(file: path, line: number)
        if line.count > options.maxLineBytes {
            return .failure(RecordError(location, .lineTooLong(bytes: line.count, limit: options.maxLineBytes)))
        }
        if let bad = UTF8Check.firstInvalidByte(line) {
            return .failure(RecordError(location, .invalidUTF8(column: bad + 1)))
        }
        let json: RecordJSON
        do {
            json = try RecordJSONParser.parse(line)
        } catch let error as RecordJSONError {
            return .failure(RecordError(location, .invalidJSON(reason: error.description)))
        } catch {
            return .failure(RecordError(location, .invalidJSON(reason: "\(error)")))
        }
        guard case .object(let members) = json else {
            return .failure(RecordError(location, .notAnObject(found: json.typeName)))
        }
        let fields = RecordFields(members: members, columns: options.columns)
        let recordFormat: RecordFormat
        if let known = format {
            recordFormat = known
        } else if let detected = RecordDecoder.detect(fields) {
            recordFormat = detected
            format = detected
        } else {
            return .failure(RecordError(location, .unknownFormat(keys: fields.keys)))
        }
        do {
            return .success(try RecordDecoder.decode(fields, as: recordFormat, columns: options.columns, roles: options.roles))
        } catch let problem as RecordProblem {
            return .failure(RecordError(location, problem))
        } catch {
            return .failure(RecordError(location, .invalidJSON(reason: "\(error)")))
        }
    }
}

extension RecordProblem: Error {}

/// An object's members after column mapping; lookups take the last member of a name.
struct RecordFields {
    let members: [RecordJSONMember]

    init(members: [RecordJSONMember], columns: [String: String]) {
        if columns.isEmpty {
            self.members = members
        } else {
            self.members = members.map { RecordJSONMember(key: columns[$0.key] ?? $0.key, value: $0.value) }
        }
    }

    subscript(key: String) -> RecordJSON? {
        for m in members.reversed() where m.key == key { return m.value }
        return nil
    }

    var keys: [String] { members.map(\.key) }

    func has(_ key: String) -> Bool { members.contains { $0.key == key } }
}

/// Turns mapped JSON objects into records.
enum RecordDecoder {
    /// The format whose keys the object has: messages -> chat; instruction or output ->
    /// instruction; prompt or completion -> prompt_completion; text -> text.
    static func detect(_ fields: RecordFields) -> RecordFormat? {
        if fields.has("messages") { return .chat }
        if fields.has("instruction") || fields.has("output") { return .instruction }
        if fields.has("prompt") || fields.has("completion") { return .promptCompletion }
        if fields.has("text") { return .text }
        return nil
    }

    /// Message keys are mapped with the same `columns` table as record keys.
    static func decode(_ fields: RecordFields, as format: RecordFormat, columns: [String: String],
                       roles: [String: String]) throws -> DataRecord {
        switch format {
        case .text:
            return .text(try string(fields, "text", format: format, nonEmpty: true))
        case .promptCompletion:
            let prompt = try string(fields, "prompt", format: format, nonEmpty: false)
            let completion = try string(fields, "completion", format: format, nonEmpty: true)
            return .promptCompletion(prompt: prompt, completion: completion)
        case .instruction:
            let instruction = try string(fields, "instruction", format: format, nonEmpty: true)
            var input = ""
            switch fields["input"] {
            case nil, .null?: break
            case .string(let s)?: input = s
            case let other?: throw RecordProblem.wrongType(field: "input", expected: "a string (or absent)", found: other.typeName)
            }
            let output = try string(fields, "output", format: format, nonEmpty: true)
            return .instruction(instruction: instruction, input: input, output: output)
        case .chat:
            guard let value = fields["messages"] else { throw RecordProblem.missingField(field: "messages", format: format) }
            guard case .array(let items) = value else {
                throw RecordProblem.wrongType(field: "messages", expected: "an array of {\"role\", \"content\"} objects", found: value.typeName)
            }
            if items.isEmpty { throw RecordProblem.emptyField(field: "messages") }
            var turns = [ChatTurn]()
            turns.reserveCapacity(items.count)
            for (k, item) in items.enumerated() {
                let name = "messages[\(k)]"
                guard case .object(let raw) = item else {
                    throw RecordProblem.wrongType(field: name, expected: "an object {\"role\", \"content\"}", found: item.typeName)
                }
                let message = RecordFields(members: raw, columns: columns)
                guard let roleValue = message["role"] else { throw RecordProblem.missingField(field: name + ".role", format: format) }
                guard case .string(let rawRole) = roleValue else {
                    throw RecordProblem.wrongType(field: name + ".role", expected: "a string", found: roleValue.typeName)
                }
                let role = roles[rawRole] ?? rawRole
                guard ChatTurn.roles.contains(role) else { throw RecordProblem.unknownRole(role: rawRole, field: name + ".role") }
                var turn = ChatTurn(role: role, content: "")
                turn.extra = message.members.filter { $0.key != "role" && $0.key != "content" }
                let callsTools = role == "assistant" && turn.extra.contains { $0.key == "tool_calls" && $0.value != .null }
                switch message["content"] {
                case .string(let content)?:
                    if role == "assistant" && !callsTools && isBlank(content) { throw RecordProblem.emptyField(field: name + ".content") }
                    turn.content = content
                case nil where callsTools, .null? where callsTools:
                    turn.contentIsNull = true
                case nil:
                    throw RecordProblem.missingField(field: name + ".content", format: format)
                case let other?:
                    throw RecordProblem.wrongType(field: name + ".content", expected: callsTools ? "a string or null" : "a string",
                                                  found: other.typeName)
                }
                turns.append(turn)
            }
            return .chat(turns)
        }
    }

    private static func string(_ fields: RecordFields, _ key: String, format: RecordFormat, nonEmpty: Bool) throws -> String {
        guard let value = fields[key] else { throw RecordProblem.missingField(field: key, format: format) }
        guard case .string(let s) = value else {
            throw RecordProblem.wrongType(field: key, expected: "a string", found: value.typeName)
        }
        if nonEmpty && isBlank(s) { throw RecordProblem.emptyField(field: key) }
        return s
    }

    /// Empty or only whitespace.
    static func isBlank(_ s: String) -> Bool {
        s.unicodeScalars.allSatisfy { $0.properties.isWhitespace }
    }
}
