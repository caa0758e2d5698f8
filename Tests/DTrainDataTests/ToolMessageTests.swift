// OpenAI-style tool-calling conversations: `tool` (and Llama 3.1's `ipython`, the older
// `function`) messages reach the template and never carry loss; an assistant's `tool_calls`
// reach the template (its content may then be null); a conversation with no assistant message
// renders for inspection with an empty mask but is not trained on.
import DTrainData
import DTrainTestSupport
import Foundation
import Testing

@Suite struct ToolMessageTests {
    static let toolChat = #"""
    {"messages": [{"role": "user", "content": "Weather in Paris?"}, {"role": "assistant", "content": null, "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}}]}, {"role": "tool", "name": "get_weather", "content": "{\"temp\": 21}"}, {"role": "assistant", "content": "It is 21 degrees."}]}
    """#

    static func qwenTemplate() throws -> ChatTemplateContext {
        let url = Fixtures.referenceDir.appendingPathComponent("chat-templates/cases.json")
        let cases = try JSONDecoder().decode([ChatTemplateCase].self, from: Data(contentsOf: url))
        let qwen = try #require(cases.first { $0.model == "Qwen/Qwen2.5-7B-Instruct" })
        return try ChatTemplateContext(source: qwen.template, bosToken: qwen.bos_token, eosToken: qwen.eos_token, origin: qwen.model)
    }

    @Test func toolRolesAndToolCallsReachTheTemplate() throws {
        let records = readRecords(Self.toolChat)
        let record = try records[0].result.get()
        guard case .chat(let turns) = record else { Issue.record("not a chat: \(record)"); return }
        #expect(turns.map(\.role) == ["user", "assistant", "tool", "assistant"])
        #expect(turns[1].contentIsNull && turns[1].extra.map(\.key) == ["tool_calls"])
        #expect(turns[2].extra.map(\.key) == ["name"])

        let smol = try SmolLM2.get()
        let encoder = ExampleEncoder(tokenizer: smol.tokenizer, template: try Self.qwenTemplate())
        let rendered = try encoder.render(record)
        // Qwen2.5 prints the call as JSON in <tool_call> and the result in <tool_response>, as transformers does.
        #expect(rendered.text.contains(#"<tool_call>\#n{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}\#n</tool_call>"#),
                "\(rendered.text)")
        #expect(rendered.text.contains("<tool_response>\n{\"temp\": 21}\n</tool_response>"), "\(rendered.text)")

        let example = try encoder.encode(record)
        let masked = maskedText(example, smol.tokenizer)
        // The call and the final answer are trained; the tool's result is not.
        #expect(masked.contains("[It"), "\(masked)")
        let text = rendered.text
        func byteRange(_ needle: String) throws -> Range<Int> {
            let found = try #require(text.range(of: needle), "\(needle) not in \(text)")
            let start = text.utf8.distance(from: text.startIndex, to: found.lowerBound)
            return start..<(start + needle.utf8.count)
        }
        let call = try byteRange(#"{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}"#)
        let answer = try byteRange("It is 21 degrees.")
        let result = try byteRange("{\"temp\": 21}")
        #expect(rendered.lossSpans.contains { $0.contains(call.lowerBound) && $0.contains(call.upperBound - 1) },
                "the tool call \(call) is not inside one loss span: \(rendered.lossSpans)")
        #expect(rendered.lossSpans.contains { $0.contains(answer.lowerBound) && $0.contains(answer.upperBound - 1) },
                "the answer \(answer) is not inside one loss span: \(rendered.lossSpans)")
        for span in rendered.lossSpans { #expect(!span.overlaps(result), "tool result \(result) in a loss span \(span)") }
    }

    @Test(arguments: ["tool", "ipython", "function"])
    func toolResultsNeverCarryLossEvenWithTrainOnInputs(role: String) throws {
        let line = #"{"messages": [{"role": "user", "content": "Look it up."}, {"role": "assistant", "content": "Looking."}, {"role": "\#(role)", "content": "RESULT-TEXT"}, {"role": "assistant", "content": "Done."}]}"#
        let record = try readRecords(line)[0].result.get()
        let smol = try SmolLM2.get()
        for trainOnInputs in [false, true] {
            let encoder = try smol.encoder(EncoderOptions(trainOnInputs: trainOnInputs))
            let rendered = try encoder.render(record)
            let text = rendered.text
            let result = try #require(text.range(of: "RESULT-TEXT"))
            let start = text.utf8.distance(from: text.startIndex, to: result.lowerBound)
            #expect(rendered.lossSpans.allSatisfy { !$0.overlaps(start..<(start + 11)) }, "\(role), train_on_inputs \(trainOnInputs)")
            #expect(!rendered.lossSpans.isEmpty)
            if trainOnInputs {
                // The user's message is trained on, the tool's is not.
                let user = try #require(text.range(of: "Look it up."))
                let u = text.utf8.distance(from: text.startIndex, to: user.lowerBound)
                #expect(rendered.lossSpans.contains { $0.contains(u) })
            }
        }
    }

    @Test func conversationWithoutAnAssistantRendersButIsNotTrained() throws {
        let record = try readRecords(#"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}"#)[0].result.get()
        let encoder = try SmolLM2.get().encoder()
        #expect(throws: RecordProblem.noAssistantMessage) { try encoder.encode(record) }
        let shown = try encoder.render(record, allowNoLoss: true)
        #expect(shown.lossSpans.isEmpty && shown.text.contains("Hi"))
    }

    @Test func unknownRoleNamesTheAcceptedOnes() throws {
        let r = readRecords(#"{"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}"#)
        guard case .failure(let error) = r[0].result else { Issue.record("accepted role robot"); return }
        #expect(error.description.contains("\"tool\"") && error.description.contains("data.roles"), "\(error)")
    }
}
