import DTrainCore
import DTrainData
import DTrainIO
import DTrainTestSupport
import DTrainTrainer
import Foundation
import Testing

/// KV-cached generation on the real SmolLM2: against full forward passes, against itself batched,
/// with LoRA on the fly and merged, against transformers' greedy tokens, and through the CLI.
@Suite(.serialized) struct GenerationTests {
    static let loaded: Result<LoadedModel, Error> = Result { try ModelLoader.load(path: try Fixtures.smolLM2Path()) }
    static let assets: Result<ModelAssets, Error> = Result { try ModelAssets.load(path: try Fixtures.smolLM2Path()) }

    static func referencePrompt(_ name: String) throws -> [Int32] {
        let cases = try SafetensorsFile(path: Fixtures.referenceDir.appendingPathComponent("smollm2/cases.safetensors").path)
        return try cases.ints("\(name).ids")
    }

    static func greedy(_ maxNew: Int, stop: Set<Int32> = []) -> GenerationOptions {
        GenerationOptions(maxNewTokens: maxNew, sampling: SamplingSettings(temperature: 0, topK: 0, topP: 1, repetitionPenalty: 1, seed: 0),
                          stopTokens: stop, stopStrings: [])
    }

    /// Greedy decoding with the cache gives the tokens (and, within float32 rounding, the logits)
    /// of full forward passes over the whole sequence at every step, for 64 new tokens.
    @Test func kvCachedDecodingEqualsFullForwardPasses() throws {
        let loaded = try Self.loaded.get()
        let prompt = Array(try Self.referencePrompt("p0").prefix(20))
        let newTokens = 64, V = loaded.config.vocabSize
        let model = LlamaModel(config: loaded.config, params: loaded.params)
        let decoder = KVCacheDecoder(model: model, rows: 1, context: prompt.count + newTokens, chunk: 7)  // prompt in 3 chunks
        var cached: [Int32] = []
        var cachedLogits: [[Float]] = []
        var logits = UnsafePointer<Float>(bitPattern: 1)!
        var at = 0
        while at < prompt.count {
            let n = min(decoder.chunk, prompt.count - at)
            logits = decoder.append(Array(prompt[at..<(at + n)]), segments: [.init(row: 0, count: n)])
            at += n
        }
        for _ in 0..<newTokens {
            let row = Array(UnsafeBufferPointer(start: logits, count: V))
            cachedLogits.append(row)
            cached.append(TokenSampler.argmax(row))
            logits = decoder.append([cached.last!], segments: [.init(row: 0, count: 1)])
        }

        let full = LlamaModel(config: loaded.config, params: loaded.params)
        full.prepare(batchSize: 1, seqLen: prompt.count + newTokens)
        var sequence = prompt
        var worst: Comparison?
        for step in 0..<newTokens {
            let T = sequence.count
            let all = full.logits(TokenBatch(batchSize: 1, seqLen: T, tokens: sequence, labels: sequence))
            let last = Array(all[((T - 1) * V)...])
            let c = compare(cachedLogits[step], last, label: "step \(step) logits")
            if c.maxAbs > worst?.maxAbs ?? -1 { worst = c }
            let token = TokenSampler.argmax(last)
            #expect(token == cached[step], "step \(step): full forward picks \(token), the cached decoder \(cached[step])")
            sequence.append(token)
        }
        #expect(worst!.maxAbs <= 2e-3, "\(worst!)")
        print("kv cache vs full forward over \(newTokens) tokens: \(worst!)")
    }

    /// Answers do not depend on what they are batched with: three prompts of different lengths
    /// at batch 3 (rows refilled as they finish) give each one's batch-1 tokens.
    @Test func batchedAnswersEqualSingleOnes() throws {
        let loaded = try Self.loaded.get(), assets = try Self.assets.get()
        let model = LlamaModel(config: loaded.config, params: loaded.params)
        let prompts = [Array(try Self.referencePrompt("p0").prefix(12)), try Self.referencePrompt("p1"),
                       Array(try Self.referencePrompt("p2").prefix(30)), Array(try Self.referencePrompt("p0").prefix(5))]
        let context = prompts.map(\.count).max()! + 24
        let batched = TextGenerator(model: model, tokenizer: assets.tokenizer, rows: 3, context: context)
            .generate(prompts, options: Self.greedy(24, stop: Set(assets.stopTokenIDs)))
        let single = TextGenerator(model: model, tokenizer: assets.tokenizer, rows: 1, context: context)
            .generate(prompts, options: Self.greedy(24, stop: Set(assets.stopTokenIDs)))
        for i in prompts.indices {
            #expect(batched[i].index == i)
            #expect(batched[i].ids == single[i].ids, "prompt \(i): batched \(batched[i].ids), alone \(single[i].ids)")
            #expect(batched[i].text == assets.tokenizer.decode(batched[i].ids.filter { !assets.stopTokenIDs.contains($0) }))
        }
    }

    /// A LoRA adapter run beside the weights gives the training model's logits, and merged into
    /// them the same logits again.
    @Test func loraOnTheFlyAndMergedGiveTheTrainingModelsLogits() throws {
        let loaded = try Self.loaded.get()
        let prompt = Array(try Self.referencePrompt("p1").prefix(24)), T = prompt.count, V = loaded.config.vocabSize
        let params = FloatBuffer(count: loaded.params.count)
        params.base.update(from: loaded.params.base, count: params.count)
        let model = LlamaModel(config: loaded.config, params: params)
        model.enableTraining(.lora(LoRAConfig(rank: 4, alpha: 8, dropout: 0, useRSLoRA: false, targets: LoRATarget.allCases)), seed: 5)
        let lora = model.lora!
        for spec in lora.specs where spec.name.hasSuffix("lora_B.weight") {
            let p = lora.weights.pointer(at: spec.offset)
            for j in 0..<spec.count { p[j] = (CounterRandom.uniform(77, spec.offset + j) - 0.5) * 0.05 }
        }
        model.prepare(batchSize: 1, seqLen: T)
        let reference = model.logits(TokenBatch(batchSize: 1, seqLen: T, tokens: prompt, labels: prompt))
        let last = Array(reference[((T - 1) * V)...])
        func decoded() -> [Float] {
            let decoder = KVCacheDecoder(model: model, rows: 1, context: T)
            let logits = decoder.append(prompt, segments: [.init(row: 0, count: T)])
            return Array(UnsafeBufferPointer(start: logits, count: V))
        }
        let base = LlamaModel(config: loaded.config, params: loaded.params)
        base.prepare(batchSize: 1, seqLen: T)
        let baseLast = Array(base.logits(TokenBatch(batchSize: 1, seqLen: T, tokens: prompt, labels: prompt))[((T - 1) * V)...])
        #expect(compare(last, baseLast, label: "adapter changes the logits").maxAbs > 1e-2)
        let onTheFly = compare(decoded(), last, label: "LoRA on the fly vs training forward")
        #expect(onTheFly.maxAbs <= 1e-3, "\(onTheFly)")
        model.mergeAdapters()
        #expect(model.lora == nil)
        let merged = compare(decoded(), last, label: "LoRA merged vs training forward")
        #expect(merged.maxAbs <= 1e-3, "\(merged)")
        print(onTheFly, merged)
    }

    /// Greedy answers equal transformers' greedy tokens (Tests/python/make_generation_reference.py),
    /// EOS included where it stopped; the chat prompts' ids are also dtrain's own tokenization.
    @Test func greedyTokensEqualTransformers() throws {
        let loaded = try Self.loaded.get(), assets = try Self.assets.get()
        let url = Fixtures.packageRoot.appendingPathComponent("Tests/python/generation-reference.json")
        let reference = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        let eos = Int32(reference["eos_token_id"] as! Int), maxNew = reference["max_new_tokens"] as! Int
        let records = reference["prompts"] as! [[String: Any]]
        let prompts = records.map { ($0["prompt_ids"] as! [Int]).map(Int32.init) }
        let model = LlamaModel(config: loaded.config, params: loaded.params)
        let generator = TextGenerator(model: model, tokenizer: assets.tokenizer, rows: 2, context: prompts.map(\.count).max()! + maxNew)
        let answers = generator.generate(prompts, options: Self.greedy(maxNew, stop: [eos]))
        let questions = reference["questions"] as! [String]
        for (i, record) in records.enumerated() {
            let expected = (record["generated_ids"] as! [Int]).map(Int32.init)
            #expect(answers[i].ids == expected, "\(record["name"]!): dtrain \(answers[i].ids), transformers \(expected)")
        }
        let template = try #require(try assets.chatTemplate(overridePath: nil))
        for (i, q) in questions.enumerated() {
            let text = try template.render([ChatTurn(role: "user", content: q)], addGenerationPrompt: true)
            let ids = assets.tokenizer.encode(text)
            let expected = records.first { $0["name"] as? String == "c\(i)" }!["prompt_ids"] as! [Int]
            #expect(ids == expected.map(Int32.init), "c\(i): dtrain renders and tokenizes the question differently")
        }
    }

    /// A stop string ends the answer before it; the streamed pieces add up to the text.
    @Test func stopStringsAndStreaming() throws {
        let loaded = try Self.loaded.get(), assets = try Self.assets.get()
        let model = LlamaModel(config: loaded.config, params: loaded.params)
        let template = try #require(try assets.chatTemplate(overridePath: nil))
        let prompt = assets.tokenizer.encode(try template.render([ChatTurn(role: "user", content: "What is the capital of France?")],
                                                                 addGenerationPrompt: true))
        let generator = TextGenerator(model: model, tokenizer: assets.tokenizer, rows: 1, context: prompt.count + 40)
        let full = generator.generate([prompt], options: Self.greedy(40, stop: Set(assets.stopTokenIDs)))[0]
        #expect(full.text.contains("Paris"), "\(full.text)")
        #expect(full.finish == .stopToken)
        var options = Self.greedy(40, stop: Set(assets.stopTokenIDs))
        options.stopStrings = ["Paris"]
        var streamed = ""
        let cut = generator.generate([prompt], options: options) { _, piece in streamed += piece }[0]
        #expect(cut.finish == .stopString)
        #expect(cut.text == String(full.text[..<full.text.range(of: "Paris")!.lowerBound]), "\(cut.text)")
        #expect(streamed == cut.text)
    }

    /// Sampling is reproducible from the seed, differs between seeds, and top-k 1 is greedy.
    @Test func samplingFollowsTheSeed() throws {
        let loaded = try Self.loaded.get(), assets = try Self.assets.get()
        let model = LlamaModel(config: loaded.config, params: loaded.params)
        let prompt = Array(try Self.referencePrompt("p0").prefix(10))
        let generator = TextGenerator(model: model, tokenizer: assets.tokenizer, rows: 2, context: 40)
        func sample(seed: UInt64, topK: Int = 0, topP: Float = 0.95) -> [Int32] {
            generator.generate([prompt], options: GenerationOptions(
                maxNewTokens: 20, sampling: SamplingSettings(temperature: 1.2, topK: topK, topP: topP, repetitionPenalty: 1.1, seed: seed),
                stopTokens: [], stopStrings: []))[0].ids
        }
        #expect(sample(seed: 1) == sample(seed: 1))
        #expect(sample(seed: 1) != sample(seed: 2))
        var greedyPenalised = Self.greedy(20)
        greedyPenalised.sampling.repetitionPenalty = 1.1
        #expect(sample(seed: 3, topK: 1, topP: 1) == generator.generate([prompt], options: greedyPenalised)[0].ids)
    }

    /// The CLI: --json lines, --data prompts with their references, and usage errors.
    @Test func generateCommand() throws {
        let model = try Fixtures.smolLM2Path()
        let r = try runDTrainDirect(["generate", "--model", model, "--prompt", "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
                                     "--prompt", "The quick brown fox", "--max-new-tokens", "16", "--json", "--threads", "2"])
        #expect(r.status == 0, "\(r.err)")
        let lines = r.out.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        #expect(lines.count == 2)
        #expect(lines.first?["index"] as? Int == 0)
        #expect((lines.first?["text"] as? String)?.contains("Paris") == true, "\(r.out)")
        for key in ["index", "text", "ids", "tokens_per_s", "finish", "prompt_tokens"] { #expect(lines.allSatisfy { $0[key] != nil }, "\(key)") }

        let dir = try TestScratch.directory("generate-cli")
        let chat = dir.appendingPathComponent("chat.jsonl"), completions = dir.appendingPathComponent("completions.jsonl")
        let instructions = dir.appendingPathComponent("instructions.jsonl")
        try """
        {"messages": [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris."}]}
        not json
        {"messages": [{"role": "user", "content": "Say hello."}]}
        """.write(to: chat, atomically: true, encoding: .utf8)
        try #"{"prompt": "The capital of Italy is", "completion": " Rome."}"#.write(to: completions, atomically: true, encoding: .utf8)
        try #"{"instruction": "Name a colour.", "output": "Blue."}"#.write(to: instructions, atomically: true, encoding: .utf8)
        let d = try runDTrainDirect(["generate", "--model", model, "--data", chat.path, "--data", completions.path, "--data", instructions.path,
                                     "--max-new-tokens", "12", "--json", "--skip-invalid"])
        #expect(d.status == 0, "\(d.err)")
        let answers = d.out.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        #expect(answers.map { $0["line"] as? Int } == [1, 3, 1, 1])
        #expect(answers.map { $0["reference"] as? String } == ["Paris.", nil, " Rome.", "Blue."])
        #expect(answers.map { $0["index"] as? Int } == [0, 1, 2, 3])
        #expect(d.err.contains("1 invalid"), "\(d.err)")
        let strict = try runDTrainDirect(["generate", "--model", model, "--data", chat.path, "--max-new-tokens", "4"])
        #expect(strict.status == 1 && strict.err.contains("chat.jsonl:2"), "\(strict.err)")

        for bad in [["generate", "--model", model], ["generate", "--model", model, "--prompt", "x", "--temperature", "-1"],
                    ["generate", "--model", model, "--prompt", "x", "--adapter", "a", "--checkpoint", "b"]] {
            let u = try runDTrainDirect(bad)
            #expect(u.status == 2, "\(bad): \(u.status) \(u.err)")
        }
    }
}

/// `dtrain chat` read from a pipe: one answer per user line, /system and /reset, the template's
/// rendering of the whole conversation each turn.
@Suite struct ChatCommandTests {
    @Test func scriptedConversation() throws {
        let model = try Fixtures.smolLM2Path()
        let script = "What is the capital of France?\nAnd of Italy?\n/reset\n/system Always answer in French.\nHello!\n/quit\nnot read\n"
        let r = try runDTrainDirect(["chat", "--model", model, "--max-new-tokens", "24", "--threads", "2"], stdin: Data(script.utf8))
        #expect(r.status == 0, "\(r.err)")
        let answers = r.out.components(separatedBy: "\n\n").filter { !$0.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty }
        #expect(answers.count == 3, "\(answers)")
        #expect(answers.first?.contains("Paris") == true, "\(r.out)")
        #expect(answers.count > 1 && answers[1].contains("Rome"), "the second answer should know the conversation: \(r.out)")

        // The same conversation's first answer equals generate on the template's rendering.
        let g = try runDTrainDirect(["generate", "--model", model, "--max-new-tokens", "24", "--json", "--prompt",
                                     "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"])
        let first = (try? JSONSerialization.jsonObject(with: Data(g.out.utf8)) as? [String: Any])?["text"] as? String
        #expect(first == answers.first, "generate: \(first ?? "nil"), chat: \(answers.first ?? "nil")")

        // The second answer, for which chat ran only the new turn after the cached first one,
        // equals generate on the whole rendered conversation run from the start.
        if answers.count > 1, let first {
            let g2 = try runDTrainDirect(["generate", "--model", model, "--max-new-tokens", "24", "--json", "--prompt",
                                          "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n\(first)<|im_end|>\n<|im_start|>user\nAnd of Italy?<|im_end|>\n<|im_start|>assistant\n"])
            let second = (try? JSONSerialization.jsonObject(with: Data(g2.out.utf8)) as? [String: Any])?["text"] as? String
            #expect(second == answers[1], "generate: \(second ?? "nil"), chat: \(answers[1])")
        }

        let bad = try runDTrainDirect(["chat", "--model", model, "--top-p", "0"], stdin: Data())
        #expect(bad.status == 2, "\(bad.err)")
    }
}
