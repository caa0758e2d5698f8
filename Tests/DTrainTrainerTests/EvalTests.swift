import DTrainData
import DTrainTestSupport
import DTrainTrainer
import Foundation
import Testing

/// `dtrain eval` scores data through the training pipeline, so on a run's validation file it
/// gives that run's validation loss, for the base weights, an adapter directory and checkpoints.
@Suite(.serialized) struct EvalTests {
    /// A prompt/completion run with a validation file (the loss masks leave the prompts out).
    static func promptCompletionRun(_ name: String, method: String) throws -> (config: String, out: String, validation: String) {
        let dir = try TestScratch.directory(name)
        func records(_ range: Range<Int>) -> String {
            range.map { i in
                "{\"prompt\": \"Add \(i) and \(i * 3). Answer:\", \"completion\": \" \(i * 4), since \(i) plus \(i * 3) is \(i * 4).\"}"
            }.joined(separator: "\n")
        }
        let train = dir.appendingPathComponent("train.jsonl"), validation = dir.appendingPathComponent("validation.jsonl")
        try records(0..<24).write(to: train, atomically: true, encoding: .utf8)
        try records(100..<110).write(to: validation, atomically: true, encoding: .utf8)
        let config = dir.appendingPathComponent("run.yaml")
        try """
        model: \(try Fixtures.smolLM2Path())
        method: \(method)
        seed: 3
        output_dir: \(dir.appendingPathComponent("out").path)
        threads: 2
        data:
          train: \(train.path)
          validation: \(validation.path)
          max_seq_len: 48
          packing: true
        lora: {r: 4, alpha: 8, dropout: 0.05}
        optim: {lr: 1.0e-3}
        batch: {global_examples: 8, micro: 4}
        train: {max_steps: 3}
        eval: {every_steps: 0}
        logging: {tensorboard: false}
        """.write(to: config, atomically: true, encoding: .utf8)
        return (config.path, dir.appendingPathComponent("out").path, validation.path)
    }

    /// The run's validation losses by step, from metrics.jsonl.
    static func validationLosses(_ out: String) throws -> [Int: Double] {
        var losses: [Int: Double] = [:]
        for line in try String(contentsOfFile: out + "/metrics.jsonl", encoding: .utf8).split(separator: "\n") {
            guard let o = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  o["kind"] as? String == "val", let step = o["step"] as? Int, let loss = o["val_loss"] as? Double else { continue }
            losses[step] = loss
        }
        return losses
    }

    static func evalJSON(_ args: [String], ranks: Int = 1) throws -> [String: Any] {
        let r = try runDTrain(ranks: ranks, ["eval", "--json"] + args, timeout: 300)
        #expect(r.status == 0, "eval \(args): exit \(r.status)\n\(r.err)")
        return (try? JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any]) ?? [:]
    }

    @Test(arguments: ["lora", "full"])
    func evalGivesTheRunsValidationLoss(method: String) throws {
        let run = try Self.promptCompletionRun("eval-\(method)", method: method)
        let trained = try runDTrain(ranks: 1, ["train", "--config", run.config], timeout: 600)
        #expect(trained.status == 0, "\(trained.err)")
        let val = try Self.validationLosses(run.out)
        let before = try #require(val[0]), after = try #require(val[3])
        let model = try Fixtures.smolLM2Path()
        let common = ["--model", model, "--data", run.validation, "--config", run.config]

        let base = try Self.evalJSON(common)
        let checkpoint = try Self.evalJSON(common + ["--checkpoint", run.out + "/checkpoints/step-00000003.h5"])
        var results: [(String, [String: Any], Double)] = [("base", base, before), ("checkpoint", checkpoint, after)]
        if method == "lora" {
            results.append(("adapter", try Self.evalJSON(common + ["--adapter", run.out + "/final"]), after))
        }
        for (what, report, expected) in results {
            let loss = try #require(report["loss"] as? Double, "\(what): \(report)")
            print("eval \(method) \(what): loss \(loss), the run's validation \(expected)")
            #expect(abs(loss - expected) <= 1e-5 * expected, "\(what): eval \(loss), validation \(expected)")
            // Today's keys, which scripts read.
            #expect(report["records"] as? Int == 10)
            #expect(report["perplexity"] as? Double != nil)
            let perRecord = try #require(report["per_record"] as? [[String: Any]])
            #expect(perRecord.count == 10)
            #expect(perRecord.allSatisfy { $0["index"] is Int && $0["tokens"] is Int && $0["loss"] is Double })
            #expect(perRecord.reduce(0) { $0 + ($1["tokens"] as? Int ?? 0) } == report["tokens"] as? Int)
        }
        #expect(abs((base["loss"] as! Double) - (checkpoint["loss"] as! Double)) > 1e-3, "training changed nothing")

        // final/ is self-contained: a full run's is a model directory dtrain loads on its own,
        // and Hugging Face's loaders read either with the same tokenizer and chat template.
        if method == "full" {
            let fromFinal = try Self.evalJSON(["--model", run.out + "/final", "--data", run.validation, "--config", run.config])
            let loss = try #require(fromFinal["loss"] as? Double)
            #expect(abs(loss - after) <= 1e-5 * after, "final/ as --model: \(loss), validation \(after)")
        }
        try Self.checkWithHuggingFace(run.out + "/final", model: model)

        // The same records gzipped give the same loss.
        let gz = run.validation + ".gz"
        let zip = Process()
        zip.executableURL = URL(fileURLWithPath: "/bin/sh")
        zip.arguments = ["-c", "gzip -c '\(run.validation)' > '\(gz)'"]
        try zip.run(); zip.waitUntilExit()
        let gzReport = try Self.evalJSON(["--model", model, "--data", gz, "--config", run.config])
        #expect(gzReport["loss"] as? Double == base["loss"] as? Double)
        removeRun(config: run.config)
    }

    /// Runs Tests/python/check_hf_directory.py on `directory` in a venv with transformers (no
    /// torch), with what dtrain's own tokenizer and template make of a few inputs.
    static func checkWithHuggingFace(_ directory: String, model: String) throws {
        let python = try huggingFacePython()
        let dir = try TestScratch.directory("hf-check")
        let texts = ["Hello, world!", "Version 12345 of 2024-12-02 costs $3.50", "  spaces\tand\nnewlines  ",
                     "Ünïcödé 日本語 🤖", "<|im_start|>user\nhi<|im_end|>\n", "def f(x):\n    return x**2  # 99"]
        let input = dir.appendingPathComponent("texts.jsonl")
        try texts.map { jsonLine(["text": $0]) }.joined(separator: "\n").write(to: input, atomically: true, encoding: .utf8)
        let tokenized = try runDTrain(ranks: 1, ["tokenize", "--model", model, input.path], timeout: 120)
        #expect(tokenized.status == 0, "\(tokenized.err)")
        var cases = [String]()
        for (text, line) in zip(texts, tokenized.out.split(separator: "\n")) {
            let ids = (try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])?["ids"] as? [Int] ?? []
            cases.append(jsonLine(["text": text, "ids": ids]))
        }
        let messages: [[String: String]] = [["role": "system", "content": "Be brief."], ["role": "user", "content": "Add 2 and 3."],
                                            ["role": "assistant", "content": "5"]]
        let chat = dir.appendingPathComponent("chat.jsonl")
        try jsonLine(["messages": messages]).write(to: chat, atomically: true, encoding: .utf8)
        let rendered = try runDTrain(ranks: 1, ["data", "render", chat.path, "--model", model], timeout: 120)
        #expect(rendered.status == 0, "\(rendered.err)")
        let text = (try JSONSerialization.jsonObject(with: Data(rendered.out.utf8)) as? [String: Any])?["text"] as? String ?? ""
        cases.append(jsonLine(["messages": messages, "rendered": text]))
        let casesFile = dir.appendingPathComponent("cases.jsonl")
        try cases.joined(separator: "\n").write(to: casesFile, atomically: true, encoding: .utf8)
        let script = Fixtures.packageRoot.appendingPathComponent("Tests/python/check_hf_directory.py").path
        let r = try run(python, [script, directory, casesFile.path])
        print("Hugging Face check of \(directory): \(r.out)")
        #expect(r.status == 0 && r.out.contains("\"ok\": true"), "\(r.out)\n\(r.err)")
    }

    /// A venv (cached beside the demo model) with Hugging Face's loaders, installed from PyPI.
    static func huggingFacePython() throws -> String {
        let venv = FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/dtrain/hf-venv").path
        let python = venv + "/bin/python"
        let probe = FileManager.default.isExecutableFile(atPath: python)
            ? try run(python, ["-c", "import transformers, tokenizers, safetensors, numpy"]) : (status: Int32(1), out: "", err: "")
        if probe.status != 0 {
            let made = try run("/usr/bin/python3", ["-m", "venv", venv])
            guard made.status == 0 else { throw FixtureError(message: "python3 -m venv \(venv) failed (apt-get install python3-venv): \(made.err)") }
            let pip = try run(python, ["-m", "pip", "install", "-q", "transformers==5.24.0", "tokenizers==0.23.3",
                                       "safetensors==0.8.0", "numpy", "jinja2"])
            guard pip.status == 0 else { throw FixtureError(message: "pip install into \(venv) failed: \(pip.err)") }
        }
        return python
    }

    static func run(_ executable: String, _ args: [String]) throws -> (status: Int32, out: String, err: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = args
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
    }

    /// Weights that do not belong: each error names the file and what was expected.
    @Test func evalRejectsWhatItCannotApply() throws {
        let dir = try TestScratch.directory("eval-bad")
        let data = dir.appendingPathComponent("v.jsonl")
        try "{\"text\": \"hello there\"}".write(to: data, atomically: true, encoding: .utf8)
        let model = try Fixtures.smolLM2Path()
        let noAdapter = try runDTrain(ranks: 1, ["eval", "--model", model, "--data", data.path, "--adapter", dir.path], timeout: 120)
        #expect(noAdapter.status == 1)
        #expect(noAdapter.err.contains("adapter_config.json"), "\(noAdapter.err)")
        let notCheckpoint = dir.appendingPathComponent("x.h5")
        try "not hdf5".write(to: notCheckpoint, atomically: true, encoding: .utf8)
        let bad = try runDTrain(ranks: 1, ["eval", "--model", model, "--data", data.path, "--checkpoint", notCheckpoint.path], timeout: 120)
        #expect(bad.status == 1)
        #expect(bad.err.contains(notCheckpoint.path), "\(bad.err)")
        let both = try runDTrain(ranks: 1, ["eval", "--model", model, "--data", data.path, "--adapter", dir.path,
                                            "--checkpoint", notCheckpoint.path], timeout: 120)
        // Giving both is a usage error: status 2, as every usage error (#16).
        #expect(both.status == 2 && both.err.contains("one of them"), "\(both.err)")
    }
}

/// eval's task metrics: generated answers scored against the references, classification by
/// log-likelihood with --labels, and the base model beside the tuned one with --compare-base.
@Suite(.serialized) struct EvalTaskMetricsTests {
    @Test func generationMetricsAndCompareBase() throws {
        let dir = try TestScratch.directory("eval-tasks")
        let data = dir.appendingPathComponent("qa.jsonl")
        try """
        {"messages": [{"role": "user", "content": "What is the capital of France? Answer in one word."}, {"role": "assistant", "content": "Paris"}]}
        {"messages": [{"role": "user", "content": "What colour is the sky on a clear day? Answer in one word."}, {"role": "assistant", "content": "Blue"}]}
        {"messages": [{"role": "user", "content": "Name the largest ocean on Earth."}, {"role": "assistant", "content": "The Pacific Ocean"}]}
        """.write(to: data, atomically: true, encoding: .utf8)
        let model = try Fixtures.smolLM2Path()
        let r = try runDTrainDirect(["eval", "--model", model, "--data", data.path, "--json", "--compare-base", "--max-new-tokens", "24"])
        #expect(r.status == 0, "\(r.err)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any])
        for key in ["loss", "perplexity", "exact_match", "token_f1", "rouge_l", "bleu", "records", "base", "answers"] {
            #expect(report[key] != nil, "\(key) missing: \(report.keys.sorted())")
        }
        let answers = try #require(report["answers"] as? [[String: Any]])
        #expect(answers.map { $0["reference"] as? String } == ["Paris", "Blue", "The Pacific Ocean"])
        // The report's numbers are the metrics of its own answers.
        let predictions = answers.map { $0["prediction"] as! String }, references = answers.map { $0["reference"] as! String }
        let em = 100 * zip(predictions, references).map { TaskMetrics.exactMatch($0, $1) }.reduce(0, +) / 3
        #expect(abs((report["exact_match"] as? Double ?? -1) - em) < 1e-9)
        #expect(abs((report["bleu"] as? Double ?? -1) - TaskMetrics.corpusBLEU(predictions, references)) < 1e-9)
        #expect(predictions.first?.contains("Paris") == true, "\(predictions)")
        // No weights applied: the base report is the same.
        let base = try #require(report["base"] as? [String: Any])
        #expect(base["loss"] as? Double == report["loss"] as? Double)
        #expect(base["exact_match"] as? Double == report["exact_match"] as? Double)
    }

    @Test func classificationByLogLikelihood() throws {
        let dir = try TestScratch.directory("eval-labels")
        let data = dir.appendingPathComponent("capitals.jsonl")
        let pairs = [("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Germany", "Berlin"), ("Japan", "Tokyo"), ("Egypt", "Cairo")]
        try pairs.map { jsonLine(["prompt": "The capital of \($0.0) is", "completion": " \($0.1)"]) }.joined(separator: "\n")
            .write(to: data, atomically: true, encoding: .utf8)
        let model = try Fixtures.smolLM2Path()
        let labels = pairs.map(\.1).joined(separator: ",")
        let r = try runDTrainDirect(["eval", "--model", model, "--data", data.path, "--json", "--labels", labels])
        #expect(r.status == 0, "\(r.err)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any])
        let confusion = try #require(report["confusion"] as? [String: [String: Int]])
        #expect(confusion.values.flatMap(\.values).reduce(0, +) == pairs.count)
        let accuracy = try #require(report["accuracy"] as? Double)
        // A 135M model knows these capitals.
        #expect(accuracy >= 80, "accuracy \(accuracy), confusion \(confusion)")
        #expect((report["macro_f1"] as? Double ?? -1) >= 0)
        #expect(report["exact_match"] == nil)
        // The loss comes from the candidates' passes; it is the loss pass's to float32 rounding.
        let lossOnly = try runDTrainDirect(["eval", "--model", model, "--data", data.path, "--json", "--loss-only"])
        let plain = try #require(try JSONSerialization.jsonObject(with: Data(lossOnly.out.utf8)) as? [String: Any])
        let loss = try #require(report["loss"] as? Double), reference = try #require(plain["loss"] as? Double)
        #expect(abs(loss - reference) < 1e-5 * max(1, reference), "loss \(loss) with --labels, \(reference) alone")
        #expect((report["per_record"] as? [[String: Any]])?.map { $0["tokens"] as? Int } == (plain["per_record"] as? [[String: Any]])?.map { $0["tokens"] as? Int })

        let bad = try runDTrainDirect(["eval", "--model", model, "--data", data.path, "--labels", "Paris,Rome"])
        #expect(bad.status == 1 && bad.err.contains("capitals.jsonl:3") && bad.err.contains("Madrid"), "\(bad.err)")
        let usage = try runDTrainDirect(["eval", "--model", model, "--data", data.path, "--labels", "Paris"])
        #expect(usage.status == 2, "\(usage.err)")
    }

    /// Training with eval.generate_every reports the task metrics of the validation answers at
    /// the start, every N steps and at the end (metrics.jsonl, the console), and early stopping
    /// and best/ can follow one of them; a task metric without generation is a config error.
    @Test func trainingReportsTaskMetrics() throws {
        let dir = try TestScratch.directory("train-task-metrics")
        let root = Fixtures.packageRoot.appendingPathComponent("data/quickstart")
        let train = try String(contentsOf: root.appendingPathComponent("train.jsonl"), encoding: .utf8).split(separator: "\n").prefix(64)
        let validation = try String(contentsOf: root.appendingPathComponent("validation.jsonl"), encoding: .utf8).split(separator: "\n").prefix(8)
        try train.joined(separator: "\n").write(to: dir.appendingPathComponent("train.jsonl"), atomically: true, encoding: .utf8)
        try validation.joined(separator: "\n").write(to: dir.appendingPathComponent("validation.jsonl"), atomically: true, encoding: .utf8)
        let config = dir.appendingPathComponent("run.yaml")
        try """
        model: \(try Fixtures.smolLM2Path())
        method: lora
        seed: 3
        output_dir: \(dir.appendingPathComponent("out").path)
        threads: 2
        data:
          train: \(dir.appendingPathComponent("train.jsonl").path)
          validation: \(dir.appendingPathComponent("validation.jsonl").path)
          max_seq_len: 64
          packing: true
        lora: {r: 8, alpha: 16, dropout: 0.0}
        optim: {lr: 2.0e-3}
        schedule: {type: constant}
        batch: {global_examples: 16, micro: 8}
        train: {max_steps: 4}
        eval: {every_steps: 2, generate_every: 2, metric: exact_match, metrics: [exact_match, bleu], max_new_tokens: 16}
        logging: {tensorboard: false}
        """.write(to: config, atomically: true, encoding: .utf8)
        let r = try runDTrain(ranks: 2, ["train", "--config", config.path], timeout: 900)
        #expect(r.status == 0, "\(r.err)")
        let lines = try String(contentsOfFile: dir.appendingPathComponent("out/metrics.jsonl").path, encoding: .utf8).split(separator: "\n")
            .compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }.filter { $0["kind"] as? String == "val" }
        #expect(lines.map { $0["step"] as? Int } == [0, 2, 4], "\(lines)")
        #expect(lines.allSatisfy { $0["exact_match"] is Double && $0["bleu"] is Double && $0["token_f1"] == nil }, "\(lines)")
        let before = lines.first?["exact_match"] as? Double ?? -1, after = lines.last?["exact_match"] as? Double ?? -1
        #expect(before == 0 && after > before, "exact match \(before) -> \(after)")
        #expect(r.out.contains("exact_match"), "\(r.out)")

        let bad = try runDTrain(ranks: 1, ["train", "--config", config.path, "--set", "eval.generate_every=0", "--set", "output_dir=\(dir.path)/bad"], timeout: 120)
        #expect(bad.status == 2 && bad.err.contains("eval.metric"), "\(bad.err)")
        let unknown = try runDTrain(ranks: 1, ["train", "--config", config.path, "--set", "eval.metrics=[accuracy]", "--set", "output_dir=\(dir.path)/bad"], timeout: 120)
        #expect(unknown.status == 2 && unknown.err.contains("eval.metrics"), "\(unknown.err)")
    }

    /// The quickstart run as shipped (its config, data and 24 steps on 2 ranks): classifying the
    /// held-out dates by log-likelihood among 8 candidates (pairs with day and month swapped)
    /// rises from the base model's accuracy to near 100%, and eval under mpirun (records shared
    /// among 2 ranks of 1 thread) reports what one process of 2 threads reports: the same
    /// predictions, generated answers and metrics, and losses equal to float32 rounding.
    @Test func quickstartClassifiesHeldOutDatesAndEvalSharesRecordsAcrossRanks() throws {
        let root = Fixtures.packageRoot, model = try Fixtures.smolLM2Path()
        let dir = try TestScratch.directory("quickstart-classify")
        let data = root.appendingPathComponent("data/quickstart").path
        let trained = try runDTrain(ranks: 2, ["train", "--config", root.appendingPathComponent("cluster-configs/smollm2/135m_lora_quickstart.yaml").path,
                                               "--set", "model=\(model)", "--set", "output_dir=\(dir.path)/run", "--set", "logging.tensorboard=false",
                                               "--set", "data.train=\(data)/train.jsonl", "--set", "data.validation=\(data)/validation.jsonl"],
                                    timeout: 1200)
        #expect(trained.status == 0, "\(trained.err)")
        let adapter = dir.path + "/run/final"
        let labels = "1962-02-09,1962-09-02,1988-04-06,1988-06-04,2004-03-11,2004-11-03,2019-05-07,2019-07-05"
        let classify = ["--model", model, "--adapter", adapter, "--data", data + "/held-out-dates.jsonl", "--labels", labels, "--compare-base"]
        let alone = try EvalTests.evalJSON(classify + ["--threads", "2"])
        let shared = try EvalTests.evalJSON(classify + ["--threads", "1"], ranks: 2)
        let base = alone["base"] as? [String: Any] ?? [:]
        let tuned = alone["accuracy"] as? Double ?? -1, before = base["accuracy"] as? Double ?? 101
        #expect(alone["records"] as? Int == 64)
        #expect(tuned >= 90 && tuned > before, "held-out accuracy: base \(before)%, tuned \(tuned)%")
        print("quickstart held-out dates, 8 labels, 64 records: accuracy base \(before)%, tuned \(tuned)%")
        Self.expectSameReport(shared, alone, "--labels, 2 ranks vs 1")

        // Generated answers: 12 date records, one rank's share each on two ranks.
        let dates = dir.appendingPathComponent("dates.jsonl")
        try (try String(contentsOfFile: data + "/validation.jsonl", encoding: .utf8)).split(separator: "\n").prefix(12)
            .joined(separator: "\n").write(to: dates, atomically: true, encoding: .utf8)
        let generate = ["--model", model, "--adapter", adapter, "--data", dates.path, "--max-new-tokens", "16"]
        let generatedAlone = try EvalTests.evalJSON(generate + ["--threads", "2"])
        let generatedShared = try EvalTests.evalJSON(generate + ["--threads", "1"], ranks: 2)
        #expect((generatedAlone["exact_match"] as? Double ?? 0) > 50, "\(generatedAlone)")
        Self.expectSameReport(generatedShared, generatedAlone, "generation, 2 ranks vs 1")
    }

    /// Two eval reports agree: every key but the losses exactly (answers, predictions, metrics,
    /// counts), the losses to float32 rounding (the ranks' thread counts differ, and with them
    /// the order of some sums; seen: below 1e-5 nats).
    static func expectSameReport(_ a: [String: Any], _ b: [String: Any], _ label: String) {
        #expect(Set(a.keys) == Set(b.keys), "\(label): keys \(a.keys.sorted()) vs \(b.keys.sorted())")
        var worst = 0.0
        for key in b.keys {
            switch (a[key], b[key]) {
            case let (x as [String: Any], y as [String: Any]) where key == "base":
                expectSameReport(x, y, label + ", base")
            case let (x as [[String: Any]], y as [[String: Any]]) where key == "per_record":
                #expect(x.count == y.count, "\(label): per_record")
                for (r, s) in zip(x, y) {
                    #expect(r["index"] as? Int == s["index"] as? Int && r["tokens"] as? Int == s["tokens"] as? Int, "\(label): \(r) vs \(s)")
                    let l = r["loss"] as? Double ?? .nan, m = s["loss"] as? Double ?? .nan
                    worst = max(worst, abs(l - m))
                }
            case let (x as Double, y as Double) where key == "loss" || key == "perplexity":
                worst = max(worst, abs(x - y) / max(1, abs(y)))
            default:
                #expect(NSDictionary(dictionary: [key: a[key] as Any]).isEqual(to: [key: b[key] as Any]), "\(label): \(key) \(a[key] ?? "nil") vs \(b[key] ?? "nil")")
            }
        }
        print("\(label): largest loss difference \(worst) nats")
        #expect(worst < 1e-4, "\(label): losses differ by \(worst) nats")
    }
}
