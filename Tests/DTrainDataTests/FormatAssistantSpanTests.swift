// Locating assistant turns in conversations rendered by the six reference chat templates
// (../shared/reference/chat-templates/cases.json: SmolLM2, Llama 3, Llama 3.1, Mistral v0.2,
// Qwen2.5, zephyr). For every conversation of system/user/assistant messages the rendered text
// must equal transformers' and each assistant span must be exactly the content as the template
// prints it followed by the model's end-of-turn text, written here by hand per model.
import DTrainData
import DTrainTestSupport
import Foundation
import Testing

/// The reference records are decoded as `ChatTemplateCase` (ChatTemplateTests.swift).

/// What closes an assistant turn, per model; and whether the template trims content.
private let endOfTurn: [String: (closing: String, trims: Bool)] = [
    "HuggingFaceTB/SmolLM2-135M-Instruct": ("<|im_end|>", false),
    "meta-llama/Meta-Llama-3-8B-Instruct": ("<|eot_id|>", true),
    "meta-llama/Llama-3.1-8B-Instruct": ("<|eot_id|>", true),
    "mistralai/Mistral-7B-Instruct-v0.2": ("</s>", false),
    "Qwen/Qwen2.5-7B-Instruct": ("<|im_end|>", false),
    "HuggingFaceH4/zephyr-7b-beta": ("</s>", false),
]

/// Python's str.strip(): White_Space plus U+001C...U+001F.
private func pythonStrip(_ s: String) -> String {
    let scalars = Array(s.unicodeScalars)
    func space(_ u: Unicode.Scalar) -> Bool { u.properties.isWhitespace || (0x1C...0x1F).contains(u.value) }
    guard let a = scalars.firstIndex(where: { !space($0) }), let b = scalars.lastIndex(where: { !space($0) }) else { return "" }
    var view = String.UnicodeScalarView()
    view.append(contentsOf: scalars[a...b])
    return String(view)
}

private func loadCases() throws -> [ChatTemplateCase] {
    let url = Fixtures.referenceDir.appendingPathComponent("chat-templates/cases.json")
    return try JSONDecoder().decode([ChatTemplateCase].self, from: Data(contentsOf: url))
}

@Suite struct FormatAssistantSpanTests {
    @Test func assistantSpansMatchEveryReferenceTemplate() throws {
        let cases = try loadCases().filter { !$0.add_generation_prompt }
        var checkedSpans = 0
        var checkedModels = Set<String>()
        var rejected = 0
        for c in cases where c.messages.allSatisfy({ ["system", "user", "assistant"].contains($0.role) }) {
            let label = "\(c.model) \(c.case)"
            let context = try ChatTemplateContext(source: c.template, bosToken: c.bos_token, eosToken: c.eos_token, origin: c.model)
            let turns = c.messages.map { ChatTurn(role: $0.role, content: $0.content ?? "") }
            guard let expected = c.expected else {
                // The template's own raise_exception reaches the record as its message.
                #expect(throws: RecordProblem.templateRejected(message: c.error ?? "")) {
                    _ = try AssistantSpans.locate(turns, template: context)
                }
                rejected += 1
                continue
            }
            let located = try AssistantSpans.locate(turns, template: context)
            #expect(located.text == expected, "\(label): rendered text differs from transformers'")
            guard let eot = endOfTurn[c.model] else { Issue.record("no end-of-turn for \(c.model)"); continue }
            let assistants = turns.filter { $0.role == "assistant" }
            #expect(located.spans.count == assistants.count, "\(label)")
            let bytes = Array(located.text.utf8)
            for (k, (span, turn)) in zip(located.spans, assistants).enumerated() {
                let printed = eot.trims ? pythonStrip(turn.content) : turn.content
                let got = String(decoding: bytes[span], as: UTF8.self)
                #expect(got == printed + eot.closing, "\(label) assistant \(k): span \(got.debugDescription)")
                checkedSpans += 1
            }
            checkedModels.insert(c.model)
        }
        #expect(checkedModels.count == 6)
        #expect(checkedSpans == 29, "\(checkedSpans) assistant spans checked")
        #expect(rejected == 2, "\(rejected) conversations rejected")
    }

    /// Token-level masks of one conversation under every reference template, with the SmolLM2
    /// tokenizer (its vocabulary lacks the other models' special tokens, so those are spelled as
    /// text; the masks must still cover exactly the assistant bytes).
    @Test func tokenMasksCoverAssistantBytesForEveryTemplate() throws {
        let smol = try SmolLM2.get()
        let cases = try loadCases().filter { !$0.add_generation_prompt && $0.case == "c_multi_turn" }
        #expect(cases.count == 6)
        for c in cases {
            let context = try ChatTemplateContext(source: c.template, bosToken: c.bos_token, eosToken: c.eos_token, origin: c.model)
            let encoder = ExampleEncoder(tokenizer: smol.tokenizer, template: context)
            let example = try encoder.encode(.chat(c.messages.map { ChatTurn(role: $0.role, content: $0.content ?? "") }))
            let shown = LossMaskDisplay.render(example, tokenizer: smol.tokenizer, style: .brackets)
            let closing = endOfTurn[c.model]!.closing
            // Both answers, each with its end-of-turn text, are the trained runs. A run may reach one
            // character further on either side, where a token straddles the boundary: Mistral's
            // " Why" carries the template's space; with this tokenizer Llama 3's "<|eot_id|><|start..."
            // is plain text whose "><" straddles the end.
            let runs = shown.split(separator: "⟦", omittingEmptySubsequences: false).dropFirst()
                .map { String($0.prefix { $0 != "⟧" }) }
            let answers = ["Hello! How can I help you today?", "Why did the chicken cross the road? To get to the other side."]
            #expect(runs.count == 2, "\(c.model): \(shown)")
            for (run, answer) in zip(runs, answers) {
                #expect(run.contains(answer + closing) && run.count <= answer.count + closing.count + 2,
                        "\(c.model): \(run.debugDescription)")
            }
        }
    }
}
