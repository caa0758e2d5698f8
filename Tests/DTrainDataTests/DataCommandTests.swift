// The DTrainData parts of `dtrain data split | render | check`: the seeded split, the render line,
// and the check report (the commands themselves only read flags and print these).
import DTrainData
import Foundation
import Testing

@Suite struct DataCommandTests {
    // MARK: - split

    @Test func splitIsDeterministicAndOrderIndependent() throws {
        let records = (0..<2000).map { DataRecord.promptCompletion(prompt: "question \($0)", completion: " answer \($0)") }
        let splitter = try DataSplitter(valFraction: 0.1, testFraction: 0.05, seed: 42)
        let parts = records.map(splitter.part(of:))
        // Same input, same split; shuffled input, same part for each record.
        #expect(records.map(splitter.part(of:)) == parts)
        var rng = SystemRandomNumberGenerator()
        let order = records.indices.shuffled(using: &rng)
        for i in order { #expect(splitter.part(of: records[i]) == parts[i]) }
        // Fractions hold within a few standard errors (sd of the val count: sqrt(2000 * 0.1 * 0.9) = 13).
        let val = parts.filter { $0 == .val }.count, test = parts.filter { $0 == .test }.count
        #expect(abs(val - 200) < 55, "val \(val)")
        #expect(abs(test - 100) < 40, "test \(test)")
        // Another seed, another split.
        let other = try DataSplitter(valFraction: 0.1, testFraction: 0.05, seed: 43)
        #expect(records.map(other.part(of:)) != parts)
        // The hash is of the content, not the JSON: key order, spacing and column names do not matter.
        let a = readRecords(#"{"prompt": "q", "completion": "a"}"#)[0].result
        let b = readRecords(#"{ "completion":"a","prompt":"q", "id": 9 }"#)[0].result
        let c = readRecords(#"{"question": "q", "answer": "a"}"#, options: ReaderOptions(columns: ["question": "prompt", "answer": "completion"]))[0].result
        #expect(try a.get().canonicalBytes == b.get().canonicalBytes)
        #expect(try a.get().canonicalBytes == c.get().canonicalBytes)
        #expect(throws: DataSplitError.self) { try DataSplitter(valFraction: 0.6, testFraction: 0.5, seed: 0) }
    }

    // MARK: - render

    @Test func renderLineShape() throws {
        let smol = try SmolLM2.get()
        let encoder = try smol.encoder()
        let record = DataRecord.chat([ChatTurn(role: "user", content: "Say \"hi\"\tplease"), ChatTurn(role: "assistant", content: "hi")])
        let example = try encoder.encode(record)
        let line = JSONText.renderLine(example, includeMask: true)
        #expect(!line.contains("\n"))
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(Set(object.keys) == ["text", "ids", "loss_mask"])
        #expect(object["text"] as? String == example.text)
        #expect((object["ids"] as? [Int]) == example.ids.map(Int.init))
        #expect((object["loss_mask"] as? [Int]) == example.lossMask.map(Int.init))
        #expect(line.hasPrefix(#"{"text":"<|im_start|>system\n"#))

        let generation = try encoder.tokenize(try encoder.render(record, addGenerationPrompt: true), format: .chat)
        let genLine = JSONText.renderLine(generation, includeMask: false)
        let genObject = try #require(try JSONSerialization.jsonObject(with: Data(genLine.utf8)) as? [String: Any])
        #expect(Set(genObject.keys) == ["text", "ids"])
        #expect((genObject["text"] as? String)?.hasSuffix("<|im_start|>assistant\nhi<|im_end|>\n<|im_start|>assistant\n") == true)

        let error = JSONText.errorLine("f.jsonl:3: the chat template rejected the conversation: \"roles\"\u{1}")
        let errorObject = try #require(try JSONSerialization.jsonObject(with: Data(error.utf8)) as? [String: String])
        #expect(errorObject == ["error": "f.jsonl:3: the chat template rejected the conversation: \"roles\"\u{1}"])
    }

    // MARK: - check

    @Test func checkReportCountsEverything() throws {
        let smol = try SmolLM2.get()
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        var lines = [String]()
        for i in 0..<20 {
            lines.append(#"{"prompt": "Question number \#(i) is about the weather in town today", "completion": " Sunny \#(i)."}"#)
        }
        lines.append(lines[3])                                                        // exact duplicate of line 4
        lines.append(#"{"prompt": "question number 5 is about the WEATHER in town, today", "completion": " sunny 5"}"#)   // near line 6
        lines.append(#"{"prompt": "x", "completion": ""}"#)                           // invalid: empty completion
        lines.append("[1, 2]")                                                        // invalid: not an object
        lines.append(#"{"prompt": "\#(String(repeating: "long ", count: 100))", "completion": " end"}"#)   // over 64 tokens
        let path = try writeLines(lines, to: "check.jsonl", in: dir)
        var options = DataCheckOptions()
        options.data.maxSeqLen = 64
        let report = try DataChecker.check(paths: [path], encoder: try smol.encoder(), options: options)

        #expect(report.data.recordsByFormat == [.promptCompletion: 23])
        #expect(report.data.invalidCount == 2)
        #expect(report.data.invalidSamples.map(\.description) == [
            "\(path):23: field \"completion\" is empty; expected text to train on",
            "\(path):24: expected a JSON object, found an array",
        ])
        #expect(report.hasInvalid)
        #expect(report.exactDuplicates == 1)
        #expect(report.nearDuplicates == 1)
        #expect(report.duplicateSamples == [
            DuplicateSample(location: RecordLocation(file: path, line: 21), original: RecordLocation(file: path, line: 4), jaccard: nil),
            DuplicateSample(location: RecordLocation(file: path, line: 22), original: RecordLocation(file: path, line: 6), jaccard: 1),
        ])
        #expect(report.lengths.count == 23)
        let l = report.lengthSummary
        #expect(l.max == Int(report.lengths.max()!))
        #expect(l.max > 100)
        #expect(l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.max)
        #expect(report.overLength == 1)
        // The long record's completion lies past 64 tokens: truncation would leave it nothing to train on.
        #expect(report.data.droppedNoLoss == 1)
        #expect(report.data.examples == 22)
        #expect(report.lossFraction > 0 && report.lossFraction < 0.5)
        let first = try #require(report.firstExample)
        #expect(first.location == RecordLocation(file: path, line: 1))
        #expect(LossMaskDisplay.render(first.example, tokenizer: smol.tokenizer, style: .brackets)
                == "Question number 0 is about the weather in town today⟦ Sunny 0.<|im_end|>⟧")
    }
}
