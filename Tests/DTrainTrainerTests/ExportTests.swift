import DTrainCore
import DTrainData
import DTrainIO
import DTrainTestSupport
import DTrainTrainer
import Foundation
import Testing

/// `dtrain export`: every format read back by dtrain gives the checkpoint's logits; transformers,
/// PEFT and llama.cpp load them with dtrain's losses and greedy tokens; refusals leave --out alone.
@Suite(.serialized) struct ExportTests {
    /// A 3-step run of `method` on the eval tests' prompt/completion data, trained once per suite.
    static let loraRun = Result { try train("lora") }
    static let fullRun = Result { try train("full") }
    static func trainedRun(_ method: String) throws -> (out: String, checkpoint: String) {
        try (method == "lora" ? loraRun : fullRun).get()
    }

    static func train(_ method: String) throws -> (out: String, checkpoint: String) {
        let run = try EvalTests.promptCompletionRun("export-\(method)", method: method)
        let trained = try runDTrain(ranks: 1, ["train", "--config", run.config], timeout: 600)
        #expect(trained.status == 0, "\(trained.err)")
        return (run.out, run.out + "/checkpoints/step-00000003.h5")
    }

    static func export(_ args: [String]) throws -> (status: Int32, out: String, err: String) {
        try runDTrainDirect(["export", "--model", try Fixtures.smolLM2Path(), "--threads", "2"] + args, timeout: 300)
    }

    static let sequence: [Int32] = {
        let assets = try! ModelAssets.load(path: try! Fixtures.smolLM2Path())
        return assets.tokenizer.encode("Add 7 and 21. Answer: 28, since 7 plus 21 is 28. The weather today is sunny.")
    }()

    static func logits(_ model: LlamaModel) -> [Float] {
        let T = sequence.count
        model.prepare(batchSize: 1, seqLen: T)
        return model.logits(TokenBatch(batchSize: 1, seqLen: T, tokens: sequence, labels: sequence))
    }

    static func logits(model path: String, adapter: String? = nil, checkpoint: String? = nil, merge: Bool = false) throws -> [Float] {
        logits(try TunedModel.load(modelPath: path, adapter: adapter, checkpoint: checkpoint, merge: merge).model)
    }

    @Test(arguments: ["lora", "full"])
    func exportsReadBackGiveTheCheckpointsLogits(method: String) throws {
        let (out, checkpoint) = try Self.trainedRun(method)
        let base = try Fixtures.smolLM2Path()
        let dir = try TestScratch.directory("export-readback-\(method)")
        // The reference: the checkpoint applied as export applies it (merged into the weights for hf and gguf).
        let merged = try Self.logits(model: base, checkpoint: checkpoint, merge: true)
        let onTheFly = try Self.logits(model: base, checkpoint: checkpoint)
        // F32 within 1e-5 of the logits' scale (bit-identical when both processes run the same
        // kernels); the narrower types within a fraction of it
        // (measured: f16 1e-3, bf16 4e-2, q8_0 5e-2 of max |logit|).
        var formats: [(format: String, dtype: String, tolerance: Double)] = [("hf", "f32", 1e-5), ("gguf", "f32", 1e-5),
                                                                             ("hf", "bf16", 0.08), ("gguf", "f16", 0.005), ("gguf", "q8_0", 0.1)]
        if method == "lora" { formats.insert(("peft", "f32", 1e-5), at: 0) }
        for (format, dtype, tolerance) in formats {
            let target = dir.appendingPathComponent("\(format)-\(dtype)").path
            let r = try Self.export(["--checkpoint", checkpoint, "--format", format, "--dtype", dtype, "--out", target])
            #expect(r.status == 0, "\(format) \(dtype): \(r.err)")
            // Nothing left under a temporary name beside the finished directory.
            let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.contains(".tmp-") || $0.contains(".old-") }
            #expect(leftovers.isEmpty, "\(leftovers)")
            let readBack: [Float]
            switch format {
            case "peft": readBack = try Self.logits(model: base, adapter: target)
            case "hf": readBack = try Self.logits(model: target)
            default: readBack = try Self.logits(model: target + "/model.gguf")
            }
            let c = compare(readBack, format == "peft" ? onTheFly : merged, label: "\(method) \(format) \(dtype) read back")
            print(c)
            // Relative to the logits' scale: the merge runs in this process and in dtrain's, whose
            // BLAS kernels may differ (a user's OPENBLAS_CORETYPE), so F32 is equal to rounding.
            #expect(c.shapeMatches && c.maxRelToScale <= tolerance, "\(c)")
        }
        // Merging is exact up to float32 rounding.
        let m = compare(merged, onTheFly, label: "\(method) merged vs adapter beside the weights")
        print(m)
        #expect(m.maxAbs <= 1e-3, "\(m)")
        try? FileManager.default.removeItem(at: dir)
        _ = out
    }

    /// transformers loads the hf directory and PEFT the adapter onto the base with dtrain's
    /// per-token losses (2e-3); llama.cpp (llama-cpp-python from its sdist) loads the F32 GGUF and
    /// its greedy tokens equal dtrain's (Tests/python/check_exports.py).
    @Test func exportsLoadInTransformersPEFTAndLlamaCpp() throws {
        let (_, checkpoint) = try Self.trainedRun("lora")
        let base = try Fixtures.smolLM2Path()
        let dir = try TestScratch.directory("export-ecosystem")
        var paths: [String: String] = [:]
        for format in ["hf", "peft", "gguf"] {
            let target = dir.appendingPathComponent(format).path
            let r = try Self.export(["--checkpoint", checkpoint, "--format", format, "--out", target])
            #expect(r.status == 0, "\(format): \(r.err)")
            paths[format] = format == "gguf" ? target + "/model.gguf" : target
        }
        let tuned = try TunedModel.load(modelPath: base, adapter: nil, checkpoint: checkpoint)
        let assets = tuned.assets
        let texts = ["Add 7 and 21. Answer: 28, since 7 plus 21 is 28.", "The quick brown fox jumps over the lazy dog."]
        var sequences: [[String: Any]] = []
        for text in texts {
            let ids = assets.tokenizer.encode(text), T = ids.count
            tuned.model.prepare(batchSize: 1, seqLen: T)
            var rowLoss = [Float](repeating: 0, count: T)
            _ = rowLoss.withUnsafeMutableBufferPointer {
                tuned.model.evaluate(TokenBatch(batchSize: 1, seqLen: T, tokens: ids, labels: ids), rowLoss: $0.baseAddress)
            }
            sequences.append(["ids": ids.map(Int.init), "losses": rowLoss.prefix(T - 1).map(Double.init)])
        }
        let template = try #require(try assets.chatTemplate(overridePath: nil))
        let prompts = [try template.render([ChatTurn(role: "user", content: "What is the capital of France?")], addGenerationPrompt: true),
                       "Add 5 and 15. Answer:", "def fibonacci(n):"].map { assets.tokenizer.encode($0) }
        let answers = TextGenerator(model: tuned.model, tokenizer: assets.tokenizer, rows: 1, context: 128)
            .generate(prompts, options: GenerationOptions(maxNewTokens: 24, sampling: SamplingSettings(temperature: 0, topK: 0, topP: 1, repetitionPenalty: 1, seed: 0),
                                                          stopTokens: assets.tokenizer.eosTokenID.map { [$0] } ?? [], stopStrings: []))
        let greedy = zip(prompts, answers).map { ["prompt": $0.0.map(Int.init), "ids": $0.1.ids.map(Int.init)] }
        let spec = dir.appendingPathComponent("spec.json")
        try Data(jsonLine(["base_gguf": base, "hf_dir": paths["hf"]!, "peft_dir": paths["peft"]!, "gguf": paths["gguf"]!,
                           "sequences": sequences, "greedy": greedy] as [String: Any]).utf8).write(to: spec)
        let python = try Self.exportPython()
        // torch, transformers, PEFT and llama.cpp load the model side by side: about 2 GB.
        let r = try MemoryGate.admit(gib: 2) {
            try EvalTests.run(python, [Fixtures.packageRoot.appendingPathComponent("Tests/python/check_exports.py").path, spec.path])
        }
        print("export check: \(r.out)")
        #expect(r.status == 0 && r.out.contains("\"ok\": true"), "\(r.out)\n\(r.err.suffix(3000))")
        try? FileManager.default.removeItem(at: dir)
    }

    /// A venv (cached beside the demo model) with torch (CPU), transformers, PEFT, gguf and
    /// llama-cpp-python built from its sdist, all from PyPI.
    static func exportPython() throws -> String {
        let venv = FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/dtrain/export-venv").path
        let python = venv + "/bin/python"
        let probe = FileManager.default.isExecutableFile(atPath: python)
            ? try EvalTests.run(python, ["-c", "import torch, transformers, peft, gguf, llama_cpp"]) : (status: Int32(1), out: "", err: "")
        guard probe.status != 0 else { return python }
        let script = Fixtures.packageRoot.appendingPathComponent("Tests/python/make-export-venv.sh").path
        let made = try EvalTests.run("/bin/bash", [script, venv])
        guard made.status == 0 else { throw FixtureError(message: "\(script) \(venv) failed: \(made.err.suffix(3000))") }
        return python
    }

    /// An existing --out without --force, peft from a full checkpoint and bad flags are refused,
    /// naming what was wrong, and leave --out as it was; --force replaces it.
    @Test func exportRefusals() throws {
        let (out, checkpoint) = try Self.trainedRun("full")
        let dir = try TestScratch.directory("export-refusals")
        let target = dir.appendingPathComponent("model").path
        try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
        try "keep".write(toFile: target + "/mine.txt", atomically: true, encoding: .utf8)
        let exists = try Self.export(["--checkpoint", checkpoint, "--format", "hf", "--out", target])
        #expect(exists.status == 1 && exists.err.contains("--force"), "\(exists.err)")
        let peft = try Self.export(["--checkpoint", checkpoint, "--format", "peft", "--out", target, "--force"])
        #expect(peft.status == 1 && peft.err.contains("full fine-tune"), "\(peft.err)")
        #expect((try? String(contentsOfFile: target + "/mine.txt", encoding: .utf8)) == "keep")
        for bad in [["--checkpoint", checkpoint, "--format", "onnx", "--out", target], ["--checkpoint", checkpoint, "--format", "gguf", "--dtype", "bf16", "--out", target],
                    ["--format", "peft", "--out", target], ["--checkpoint", checkpoint, "--adapter", target, "--format", "hf", "--out", target]] {
            let r = try Self.export(bad)
            #expect(r.status == 2, "\(bad): \(r.status) \(r.err)")
        }
        let forced = try Self.export(["--checkpoint", checkpoint, "--format", "hf", "--out", target, "--force"])
        #expect(forced.status == 0, "\(forced.err)")
        #expect(!FileManager.default.fileExists(atPath: target + "/mine.txt"))
        #expect(FileManager.default.fileExists(atPath: target + "/model.safetensors"))
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0 != "model" }
        #expect(leftovers.isEmpty, "\(leftovers)")
        try? FileManager.default.removeItem(at: dir)
        _ = out
    }
}
