// Reading JSONL records: the four formats, detection, column and role mapping, the JSON parser,
// and every kind of bad input giving its own error with file:line (or being skipped and counted).
import DTrainData
import Foundation
import Testing

/// The problem of the only record of `text`.
private func problem(_ text: String, options: ReaderOptions = ReaderOptions()) -> RecordProblem? {
    let records = readRecords(text, options: options)
    guard records.count == 1, case .failure(let error) = records[0].result else { return nil }
    return error.problem
}

private func record(_ text: String, options: ReaderOptions = ReaderOptions()) -> DataRecord? {
    let records = readRecords(text, options: options)
    guard records.count == 1, case .success(let r) = records[0].result else { return nil }
    return r
}

@Suite struct FormatReaderTests {
    // MARK: - Formats

    @Test func readsEachFormat() {
        #expect(record(#"{"text": "Hello"}"#) == .text("Hello"))
        #expect(record(#"{"prompt": "2+2=", "completion": "4", "id": 7}"#) == .promptCompletion(prompt: "2+2=", completion: "4"))
        #expect(record(#"{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}"#)
                == .chat([ChatTurn(role: "user", content: "Hi"), ChatTurn(role: "assistant", content: "Hello")]))
        #expect(record(#"{"instruction": "Add", "input": "2, 2", "output": "4"}"#)
                == .instruction(instruction: "Add", input: "2, 2", output: "4"))
        // input is optional, and null means absent.
        #expect(record(#"{"instruction": "Say hi", "output": "hi"}"#) == .instruction(instruction: "Say hi", input: "", output: "hi"))
        #expect(record(#"{"instruction": "Say hi", "input": null, "output": "hi"}"#) == .instruction(instruction: "Say hi", input: "", output: "hi"))
        // An empty prompt is allowed; the completion is what is trained.
        #expect(record(#"{"prompt": "", "completion": "x"}"#) == .promptCompletion(prompt: "", completion: "x"))
    }

    @Test func detectsTheFormatPerFileFromTheFirstRecord() {
        let text = """
            {"prompt": "a", "completion": "b"}
            {"text": "not a prompt/completion record"}
            """
        var reader = DataRecordReader(name: "f.jsonl", bytes: Data(text.utf8))
        let all = reader.readAll()
        #expect(reader.format == .promptCompletion)
        guard case .failure(let error) = all[1].result else { Issue.record("line 2 should fail"); return }
        #expect(error.location == RecordLocation(file: "f.jsonl", line: 2))
        #expect(error.problem == .missingField(field: "prompt", format: .promptCompletion))
        // A given format applies to every line.
        #expect(problem(#"{"text": "x"}"#, options: ReaderOptions(format: .chat)) == .missingField(field: "messages", format: .chat))
    }

    @Test func columnMappingRenamesRecordAndMessageKeys() {
        let qa = ReaderOptions(columns: ["question": "prompt", "answer": "completion"])
        #expect(record(#"{"question": "Why?", "answer": " Because."}"#, options: qa)
                == .promptCompletion(prompt: "Why?", completion: " Because."))
        let shareGPT = ReaderOptions(columns: ["conversations": "messages", "from": "role", "value": "content"],
                                     roles: ["human": "user", "gpt": "assistant"])
        #expect(record(#"{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Yo"}]}"#, options: shareGPT)
                == .chat([ChatTurn(role: "user", content: "Hi"), ChatTurn(role: "assistant", content: "Yo")]))
    }

    @Test func blankLinesAndCRLFAreNotRecords() {
        let records = readRecords("{\"text\": \"a\"}\r\n\r\n   \n{\"text\": \"b\"}")
        #expect(records.map(\.line) == [1, 4])
        #expect(records.compactMap { try? $0.result.get() } == [.text("a"), .text("b")])
    }

    // MARK: - JSON

    @Test func parsesJSONEscapesAndUnicode() throws {
        let json = try RecordJSONParser.parse(#"{"a": "tab\there \"q\" \\ \/ \u00e9 \ud83d\ude00 日本", "n": -1.5e3, "b": [true, false, null], "o": {}}"#)
        #expect(json["a"] == .string("tab\there \"q\" \\ / é 😀 日本"))
        #expect(json["n"] == .number(-1500))
        #expect(json["b"] == .array([.bool(true), .bool(false), .null]))
        #expect(json["o"] == .object([]))
        // The last of repeated keys wins, as in Python.
        #expect(try RecordJSONParser.parse(#"{"k": "1", "k": "2"}"#)["k"] == .string("2"))
    }

    @Test func rejectsMalformedJSONWithAColumn() {
        let cases: [(String, String)] = [
            (#"{"text": "x",}"#, "expected a key in double quotes"),
            (#"{"text": "x"} extra"#, "extra data"),
            (#"{"text": "unterminated}"#, "unterminated string"),
            ("{\"text\": \"raw\ttab\"}", "raw control character"),
            (#"{"text": "\ud800"}"#, "lone UTF-16 surrogate"),
            (#"{"text": 01}"#, "expected ',' or '}'"),
            (#"{'text': "x"}"#, "expected a key in double quotes"),
            (#"{"text": NaN}"#, "expected a value"),
        ]
        for (line, message) in cases {
            guard case .invalidJSON(let reason)? = problem(line) else {
                Issue.record("\(line) should be invalid JSON, got \(String(describing: problem(line)))")
                continue
            }
            #expect(reason.contains(message), "\(line): \(reason)")
            #expect(reason.contains("at column"), "\(line): \(reason)")
        }
    }

    @Test func checksUTF8() {
        let valid = ["", "abc", "é", "日本語", "😀", "\u{10FFFF}"]
        for s in valid {
            #expect(Array(s.utf8).withUnsafeBytes { UTF8Check.firstInvalidByte($0) } == nil, "\(s)")
        }
        let invalid: [([UInt8], Int)] = [
            ([0x61, 0xFF], 1), ([0xC0, 0x80], 0), ([0xE0, 0x80, 0x80], 0), ([0xED, 0xA0, 0x80], 0),
            ([0xF4, 0x90, 0x80, 0x80], 0), ([0x61, 0x62, 0xE6, 0x97], 2), (Array("0123456789abcdef".utf8) + [0x80], 16),
        ]
        for (bytes, at) in invalid {
            #expect(bytes.withUnsafeBytes { UTF8Check.firstInvalidByte($0) } == at, "\(bytes)")
        }
    }

    // MARK: - Bad input: each kind its own error

    @Test func eachKindOfBadInputHasItsOwnError() {
        #expect(problem(#"{"text": "#) == .invalidJSON(reason: "expected a value, found the end of the line at column 10"))
        #expect(problem(#"["text"]"#) == .notAnObject(found: "an array"))
        #expect(problem(#"{"title": "x"}"#) == .unknownFormat(keys: ["title"]))
        #expect(problem(#"{"prompt": "x"}"#) == .missingField(field: "completion", format: .promptCompletion))
        #expect(problem(#"{"text": 3}"#) == .wrongType(field: "text", expected: "a string", found: "a number"))
        #expect(problem(#"{"prompt": "x", "completion": ""}"#) == .emptyField(field: "completion"))
        #expect(problem(#"{"prompt": "x", "completion": "  \n"}"#) == .emptyField(field: "completion"))
        #expect(problem(#"{"instruction": "x", "output": ""}"#) == .emptyField(field: "output"))
        #expect(problem(#"{"instruction": "x", "input": 1, "output": "y"}"#)
                == .wrongType(field: "input", expected: "a string (or absent)", found: "a number"))
        #expect(problem(#"{"messages": []}"#) == .emptyField(field: "messages"))
        #expect(problem(#"{"messages": "hi"}"#)
                == .wrongType(field: "messages", expected: "an array of {\"role\", \"content\"} objects", found: "a string"))
        #expect(problem(#"{"messages": [{"role": "robot", "content": "x"}]}"#) == .unknownRole(role: "robot", field: "messages[0].role"))
        #expect(problem(#"{"messages": [{"role": "user"}]}"#) == .missingField(field: "messages[0].content", format: .chat))
        #expect(problem(#"{"messages": [{"role": "user", "content": null}]}"#)
                == .wrongType(field: "messages[0].content", expected: "a string", found: "null"))
        #expect(problem(#"{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]}"#)
                == .emptyField(field: "messages[1].content"))
        #expect(problem(#"{"messages": ["hi"]}"#)
                == .wrongType(field: "messages[0]", expected: "an object {\"role\", \"content\"}", found: "a string"))
        #expect(problem(#"{"text": "ok"}"#, options: ReaderOptions(maxLineBytes: 10)) == .lineTooLong(bytes: 14, limit: 10))

        var bad = Array(#"{"text": "caf"#.utf8)
        bad += [0xE9]   // Latin-1 é
        bad += Array(#""}"#.utf8)
        var reader = DataRecordReader(name: "latin1.jsonl", bytes: Data(bad))
        let result = reader.readAll()
        #expect(result.count == 1)
        if case .failure(let e) = result[0].result {
            #expect(e.problem == .invalidUTF8(column: 14))
            #expect(e.description.hasPrefix("latin1.jsonl:1: invalid UTF-8 at byte 14"))
        } else {
            Issue.record("Latin-1 byte accepted")
        }

        var empty = DataRecordReader(name: "empty.jsonl", bytes: Data("\n  \n".utf8))
        let none = empty.readAll()
        #expect(none.count == 1 && none[0].line == 0)
        if case .failure(let e) = none[0].result {
            #expect(e.problem == .emptyFile)
            #expect(e.description == "empty.jsonl: no records: the file is empty or holds only blank lines")
        }
    }

    @Test func errorsNameFileLineAndWhatWasExpected() {
        let records = readRecords("{\"text\": \"ok\"}\n{\"text\": 1}\n", name: "data/train.jsonl")
        guard case .failure(let error) = records[1].result else { Issue.record("expected an error"); return }
        #expect(error.description == "data/train.jsonl:2: field \"text\" is a number; expected a string")
        let missing = RecordError(RecordLocation(file: "a.jsonl", line: 9), .missingField(field: "completion", format: .promptCompletion))
        #expect(missing.description.hasPrefix("a.jsonl:9: missing field \"completion\": this file's records are prompt_completion, like {\"prompt\""))
    }

    // MARK: - gzip

    @Test func readsGzipFiles() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let plain = try writeLines([#"{"text": "one"}"#, #"{"text": "two"}"#], to: "d.jsonl", in: dir)
        let gzip = Process()
        gzip.executableURL = URL(fileURLWithPath: "/bin/sh")
        gzip.arguments = ["-c", "gzip -c '\(plain)' > '\(plain).gz' && cat '\(plain).gz' '\(plain).gz' > '\(dir.path)/two.jsonl.gz'"]
        try gzip.run()
        gzip.waitUntilExit()
        #expect(gzip.terminationStatus == 0)
        var reader = try DataRecordReader(path: plain + ".gz")
        #expect(reader.readAll().compactMap { try? $0.result.get() } == [.text("one"), .text("two")])
        // Concatenated members read one after another, as gzip -d does.
        var two = try DataRecordReader(path: dir.path + "/two.jsonl.gz")
        #expect(two.readAll().count == 4)
        // A truncated file is an error naming the file, not a silent short read.
        let whole = try Data(contentsOf: URL(fileURLWithPath: plain + ".gz"))
        try whole.prefix(whole.count - 6).write(to: dir.appendingPathComponent("cut.jsonl.gz"))
        #expect(throws: DataFileError.self) { try DataRecordReader(path: dir.path + "/cut.jsonl.gz") }
        #expect(throws: DataFileError.self) { try DataRecordReader(path: dir.path + "/missing.jsonl") }
    }
}
