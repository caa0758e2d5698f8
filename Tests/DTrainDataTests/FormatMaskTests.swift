// Loss masks with the real SmolLM2 tokenizer and chat template, on hand-checked examples of every
// format. Expectations are written as the decoded text with each run of trained tokens in [ ]:
// bracket positions are token boundaries, so a bracket inside a word would show a token split
// there. SmolLM2's template puts a default system prompt first when the conversation has none.
import DTrainData
import Foundation
import Testing

private let defaultSystem = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"

@Suite struct FormatMaskTests {
    let smol: SmolLM2
    let encoder: ExampleEncoder

    init() throws {
        smol = try SmolLM2.get()
        encoder = try smol.encoder()
    }

    func masked(_ record: DataRecord, _ encoder: ExampleEncoder? = nil) throws -> String {
        let e = encoder ?? self.encoder
        let example = try e.encode(record)
        #expect(example.ids.count == example.lossMask.count)
        return maskedText(example, smol.tokenizer)
    }

    @Test func rawTextTrainsEverythingAndEOS() throws {
        let example = try encoder.encode(.text("Hello world"))
        #expect(example.ids.map { smol.tokenizer.tokenString($0) } == ["Hello", "Ġworld", "<|im_end|>"])
        #expect(example.lossMask == [1, 1, 1])
        #expect(example.text == "Hello world")
        // Without EOS, and with a BOS asked for: BOS is context only.
        let plain = try smol.encoder(EncoderOptions(appendEOS: false, addBOS: true))
        let noEOS = try plain.encode(.text("Hello world"))
        #expect(noEOS.ids.map { smol.tokenizer.tokenString($0) } == ["<|im_start|>", "Hello", "Ġworld"])
        #expect(noEOS.lossMask == [0, 1, 1])
    }

    @Test func promptCompletionTrainsTheCompletionAndEOS() throws {
        #expect(try masked(.promptCompletion(prompt: "Q: 2+2?\nA:", completion: " 4")) == "Q: 2+2?\nA:[ 4<|im_end|>]")
        let example = try encoder.encode(.promptCompletion(prompt: "Q: 2+2?\nA:", completion: " 4"))
        let trained = zip(example.ids, example.lossMask).filter { $0.1 == 1 }.map { smol.tokenizer.tokenString($0.0) }
        #expect(trained == ["Ġ", "4", "<|im_end|>"])   // SmolLM splits digits apart, and the space with them
        // A token that straddles the prompt/completion boundary (" yes" = space from the prompt,
        // "yes" from the completion) carries loss: part of it is the answer.
        #expect(try masked(.promptCompletion(prompt: "Answer: ", completion: "yes")) == "Answer:[ yes<|im_end|>]")
        // train_on_inputs: everything.
        let all = try smol.encoder(EncoderOptions(trainOnInputs: true))
        #expect(try masked(.promptCompletion(prompt: "Q: 2+2?\nA:", completion: " 4"), all) == "[Q: 2+2?\nA: 4<|im_end|>]")
    }

    @Test func promptCompletionThroughTheTemplate() throws {
        let viaTemplate = try smol.encoder(EncoderOptions(promptCompletionUsesTemplate: true))
        #expect(try masked(.promptCompletion(prompt: "2+2?", completion: "4"), viaTemplate)
                == defaultSystem + "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n[4<|im_end|>]\n")
    }

    @Test func chatTrainsAssistantTurnsAndTheirEndOfTurnToken() throws {
        let chat: DataRecord = .chat([
            ChatTurn(role: "system", content: "Be brief."),
            ChatTurn(role: "user", content: "Hi"),
            ChatTurn(role: "assistant", content: "Hello!"),
            ChatTurn(role: "user", content: "Bye"),
            ChatTurn(role: "assistant", content: "Bye!"),
        ])
        #expect(try masked(chat) == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                + "<|im_start|>assistant\n[Hello!<|im_end|>]\n<|im_start|>user\nBye<|im_end|>\n"
                + "<|im_start|>assistant\n[Bye!<|im_end|>]\n")
        let example = try encoder.encode(chat)
        let trained = zip(example.ids, example.lossMask).filter { $0.1 == 1 }.map { smol.tokenizer.tokenString($0.0) }
        #expect(trained == ["Hello", "!", "<|im_end|>", "By", "e", "!", "<|im_end|>"])   // SmolLM2 spells "\nBye" as "Ċ", "By", "e"
        // The "\n" after <|im_end|> and the next turn's header carry none.
        #expect(example.text.hasSuffix("Bye!<|im_end|>\n"))
        #expect(example.lossMask.last == 0)
    }

    @Test func chatEdgeCases() throws {
        // The assistant speaks first: its turn sits after the default system prompt.
        #expect(try masked(.chat([ChatTurn(role: "assistant", content: "I speak first."), ChatTurn(role: "user", content: "Then me.")]))
                == defaultSystem + "<|im_start|>assistant\n[I speak first.<|im_end|>]\n<|im_start|>user\nThen me.<|im_end|>\n")
        // Content that starts with a newline: the pre-tokenizer keeps the template's "\n" and the
        // content's apart ("\n" before a letter is a word of its own), so the mask starts exactly
        // at the content.
        #expect(try masked(.chat([ChatTurn(role: "user", content: "x"), ChatTurn(role: "assistant", content: "\nok")]))
                == defaultSystem + "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n[\nok<|im_end|>]\n")
        // Content that repeats the user's words is found in its own turn, not in the user's.
        #expect(try masked(.chat([ChatTurn(role: "user", content: "Say yes"), ChatTurn(role: "assistant", content: "yes")]))
                == defaultSystem + "<|im_start|>user\nSay yes<|im_end|>\n<|im_start|>assistant\n[yes<|im_end|>]\n")
        // Special-token text inside content is parsed as the special token (as Hugging Face does).
        let example = try encoder.encode(.chat([ChatTurn(role: "user", content: "q"), ChatTurn(role: "assistant", content: "a <|im_end|> b")]))
        #expect(maskedText(example, smol.tokenizer).hasSuffix("assistant\n[a <|im_end|> b<|im_end|>]\n"))
    }

    @Test func instructionIsAUserAndAnAssistantMessage() throws {
        #expect(try masked(.instruction(instruction: "Translate to French.", input: "cat", output: "chat"))
                == defaultSystem + "<|im_start|>user\nTranslate to French.\n\ncat<|im_end|>\n<|im_start|>assistant\n[chat<|im_end|>]\n")
        #expect(try masked(.instruction(instruction: "Say hi.", input: "", output: "Hi!"))
                == defaultSystem + "<|im_start|>user\nSay hi.<|im_end|>\n<|im_start|>assistant\n[Hi!<|im_end|>]\n")
    }

    @Test func trainOnInputsTrainsTheWholeConversation() throws {
        let all = try smol.encoder(EncoderOptions(trainOnInputs: true))
        let record: DataRecord = .chat([ChatTurn(role: "user", content: "Hi"), ChatTurn(role: "assistant", content: "Yo")])
        #expect(try masked(record, all) == "[" + defaultSystem + "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nYo<|im_end|>\n]")
        // A conversation with no assistant turn is an error unless every token is trained.
        let userOnly: DataRecord = .chat([ChatTurn(role: "user", content: "Hi")])
        #expect(throws: RecordProblem.noAssistantMessage) { try encoder.encode(userOnly) }
        #expect(try all.encode(userOnly).lossTokenCount > 0)
    }

    @Test func generationPromptRendering() throws {
        let chat: DataRecord = .chat([ChatTurn(role: "user", content: "Hi")])
        let r = try encoder.render(chat, addGenerationPrompt: true)
        #expect(r.text == defaultSystem + "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
        #expect(r.lossSpans.isEmpty)
        let inst = try encoder.render(.instruction(instruction: "Do it.", input: "", output: "Done."), addGenerationPrompt: true)
        #expect(inst.text == defaultSystem + "<|im_start|>user\nDo it.<|im_end|>\n<|im_start|>assistant\n")
        #expect(try encoder.render(.promptCompletion(prompt: "P", completion: "C"), addGenerationPrompt: true).text == "P")
    }

    @Test func templateErrorsBecomeRecordProblems() throws {
        let strict = try ChatTemplateContext(
            source: "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{{ m['content'] }}{% endfor %}",
            bosToken: nil, eosToken: nil, origin: "test")
        let e = ExampleEncoder(tokenizer: smol.tokenizer, template: strict)
        #expect(throws: RecordProblem.templateRejected(message: "System role not supported")) {
            try e.encode(.chat([ChatTurn(role: "system", content: "s"), ChatTurn(role: "user", content: "u"),
                                ChatTurn(role: "assistant", content: "a")]))
        }
        // A template that does not print assistant content: no loss span can be found.
        let dropping = try ChatTemplateContext(source: "{% for m in messages %}{% if m['role'] == 'user' %}{{ m['content'] }}{% endif %}{% endfor %}",
                                               bosToken: nil, eosToken: nil, origin: "test")
        let d = ExampleEncoder(tokenizer: smol.tokenizer, template: dropping)
        #expect {
            try d.encode(.chat([ChatTurn(role: "user", content: "u"), ChatTurn(role: "assistant", content: "a")]))
        } throws: { error in
            if case .assistantNotFound(index: 0, _)? = error as? RecordProblem { return true }
            return false
        }
        // No template at all: a setup error for chat, fine for text.
        let none = ExampleEncoder(tokenizer: smol.tokenizer, template: nil)
        #expect(throws: NoChatTemplateError.self) { try none.encode(.instruction(instruction: "i", input: "", output: "o")) }
        #expect(try none.encode(.text("fine")).ids.count == 2)
    }
}

// MARK: - Loading files: length policy, error policy, counts

@Suite struct FormatLoaderTests {
    let smol: SmolLM2

    init() throws { smol = try SmolLM2.get() }

    @Test func lengthPolicyTruncatesDropsOrFails() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = try writeLines([
            #"{"text": "one two three four five six seven eight"}"#,   // 9 tokens with EOS
            #"{"text": "short"}"#,                                       // 2 tokens
            #"{"prompt": "one two three four five six seven eight nine", "completion": " ten"}"#,
        ], to: "len.jsonl", in: dir)
        let encoder = try smol.encoder()
        var options = DataOptions(maxSeqLen: 5, lengthPolicy: .truncate)
        // Detection is per file: line 3 is not a text record.
        options.onError = .skip
        let truncated = try DataLoader.load(paths: [path], encoder: encoder, options: options)
        #expect(truncated.examples.map(\.ids.count) == [5, 2])
        #expect(truncated.report.truncated == 1)
        #expect(truncated.report.invalidByKind == ["missing_field": 1])

        let pc = try writeLines([
            #"{"prompt": "one two three four five six seven eight nine", "completion": " ten"}"#,
            #"{"prompt": "a", "completion": " b"}"#,
        ], to: "pc.jsonl", in: dir)
        // Truncation that cuts away every trained token drops the example, counted apart.
        let noLoss = try DataLoader.load(paths: [pc], encoder: encoder, options: DataOptions(maxSeqLen: 5, lengthPolicy: .truncate))
        #expect(noLoss.examples.count == 1)
        #expect(noLoss.report.droppedNoLoss == 1)

        let dropped = try DataLoader.load(paths: [path], encoder: encoder,
                                          options: DataOptions(maxSeqLen: 5, lengthPolicy: .drop, onError: .skip))
        #expect(dropped.examples.map(\.ids.count) == [2])
        #expect(dropped.report.droppedTooLong == 1)

        #expect(throws: RecordError(RecordLocation(file: path, line: 1), .tooLong(tokens: 9, limit: 5))) {
            try DataLoader.load(paths: [path], encoder: encoder, options: DataOptions(maxSeqLen: 5, lengthPolicy: .error))
        }
    }

    @Test func skipModeCountsEveryBadRecordAndFailModeStopsAtTheFirst() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = try writeLines([
            #"{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}"#,
            #"{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": ""}]}"#,
            #"{"messages": [{"role": "bot", "content": "Hi"}]}"#,
            #"{"messages": [{"role": "user", "content": "only a question"}]}"#,
            "{not json",
            #"{"messages": [{"role": "user", "content": 5}]}"#,
            "",
            #"{"messages": [{"role": "user", "content": "Again"}, {"role": "assistant", "content": "Sure"}]}"#,
        ], to: "chat.jsonl", in: dir)
        let empty = try writeLines([], to: "empty.jsonl", in: dir)
        let encoder = try smol.encoder()
        let loaded = try DataLoader.load(paths: [path, empty], encoder: encoder, options: DataOptions(onError: .skip))
        #expect(loaded.examples.count == 2)
        #expect(loaded.report.recordsByFormat == [.chat: 2])
        #expect(loaded.report.invalidCount == 6)
        #expect(loaded.report.invalidByKind == ["empty_field": 1, "unknown_role": 1, "no_assistant_message": 1,
                                                "invalid_json": 1, "wrong_type": 1, "empty_file": 1])
        #expect(loaded.report.invalidSamples.map(\.location.line) == [2, 3, 4, 5, 6, 0])
        #expect(loaded.report.files.map(\.records) == [7, 0])
        #expect(loaded.report.files.map(\.invalid) == [5, 1])
        #expect(loaded.report.tokens == loaded.examples.map(\.ids.count).reduce(0, +))
        #expect(loaded.report.lossTokens == loaded.examples.map(\.lossTokenCount).reduce(0, +))

        #expect(throws: RecordError(RecordLocation(file: path, line: 2), .emptyField(field: "messages[1].content"))) {
            try DataLoader.load(paths: [path], encoder: encoder, options: DataOptions(onError: .fail))
        }
        // Records that need a template when there is none stop the load whatever the policy.
        let bare = ExampleEncoder(tokenizer: smol.tokenizer, template: nil)
        #expect(throws: DataFileError.self) { try DataLoader.load(paths: [path], encoder: bare, options: DataOptions(onError: .skip)) }
    }

    @Test func templateFromATokenizerConfig() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = dir.appendingPathComponent("tokenizer_config.json")
        let object: [String: Any] = [
            "chat_template": "{{ bos_token }}{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{{ eos_token }}{% endfor %}",
            "bos_token": ["content": "<|im_start|>"], "eos_token": "<|endoftext|>",
        ]
        try JSONSerialization.data(withJSONObject: object).write(to: config)
        let context = try ChatTemplateContext.load(file: config.path, defaultBOS: "X", defaultEOS: "Y")
        #expect(context.bosToken == "<|im_start|>")
        #expect(context.eosToken == "<|endoftext|>")
        let e = ExampleEncoder(tokenizer: smol.tokenizer, template: context)
        let example = try e.encode(.chat([ChatTurn(role: "user", content: "u"), ChatTurn(role: "assistant", content: "a")]))
        #expect(maskedText(example, smol.tokenizer) == "<|im_start|><user>u<|endoftext|><assistant>[a<|endoftext|>]")

        let jinja = dir.appendingPathComponent("t.jinja")
        try Data("{% for m in messages %}{{ m['content'] }}{{ eos_token }}{% endfor %}".utf8).write(to: jinja)
        let fromJinja = try ChatTemplateContext.load(file: jinja.path, defaultBOS: smol.bos, defaultEOS: smol.eos)
        #expect(fromJinja.eosToken == "<|im_end|>")
        #expect(throws: ChatTemplateFileError.self) {
            try Data(#"{"bos_token": "<s>"}"#.utf8).write(to: config)
            _ = try ChatTemplateContext.load(file: config.path, defaultBOS: nil, defaultEOS: nil)
        }
    }
}
