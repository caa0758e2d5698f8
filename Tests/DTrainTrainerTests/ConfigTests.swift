import DTrainData
import DTrainTestSupport
import DTrainTrainer
import Foundation
import Testing

/// Config errors each get their own message, naming the key, before any training starts.
@Suite struct ConfigTests {
    let base = "model: /tmp/m.gguf\ndata:\n  train: /tmp/t.jsonl\n"

    func load(_ yaml: String, _ overrides: [String] = []) throws -> RunConfig {
        try ConfigLoader.decode(RunConfig.self, yaml: yaml, file: "run.yaml", overrides: overrides)
    }

    @Test func defaultsAndOverrides() throws {
        let c = try load(base, ["optim.lr=1e-4", "lora.r=4", "batch.global_examples=32", "train.max_steps=7", "eval.patience=2", "seed=9"])
        #expect(c.optim.lr == 1e-4 && c.lora.r == 4 && c.batch.globalExamples == 32 && c.train.maxSteps == 7)
        #expect(c.eval.patience == 2 && c.seed == 9 && c.method == .lora && c.data.train == ["/tmp/t.jsonl"])
        // The effective config round-trips through YAML.
        #expect(try load(c.yaml()) == c)
    }

    @Test func unknownKeyNamesItAndSuggests() throws {
        #expect { try load(base + "lora:\n  rank: 8\n") } throws: { error in
            guard case ConfigError.unknownKey(let key, _) = error else { return false }
            return key == "lora.rank" && "\(error)".contains("did you mean 'r'")
        }
        #expect { try load(base, ["optim.learning_rate=1"]) } throws: { error in
            if case ConfigError.unknownKey("optim.learning_rate", _) = error { return true }
            return false
        }
    }

    @Test func wrongTypeNamesTheKey() throws {
        #expect { try load(base + "optim:\n  lr: fast\n") } throws: { error in
            if case ConfigError.wrongType("optim.lr", _) = error { return true }
            return false
        }
    }

    @Test func microBatchMustDivide() throws {
        let c = try load(base, ["batch.global_examples=12", "batch.micro=4"])
        #expect { try c.validate(worldSize: 2) } throws: { error in
            guard case ConfigError.invalid("batch.micro", let message) = error else { return false }
            return message.contains("multiple of ranks x micro")
        }
        try c.validate(worldSize: 1)
    }

    @Test func missingFilesAreNamed() throws {
        let c = try load("model: /nonexistent/model.gguf\ndata:\n  train: /tmp/t.jsonl\n")
        #expect { try c.checkFiles() } throws: { error in
            guard case ConfigError.invalid("model", let message) = error else { return false }
            return message.contains("/nonexistent/model.gguf")
        }
    }

    @Test func missingModelKey() throws {
        #expect { try load("data:\n  train: x.jsonl\n") } throws: { error in
            if case ConfigError.missing("model", _) = error { return true }
            return false
        }
    }

    @Test func schedule() {
        let s = ScheduleSection()
        var warm = s
        warm.warmupSteps = 10
        #expect(warm.lr(step: 5, total: 100, peak: 1) == 0.5)
        #expect(abs(s.lr(step: 100, total: 100, peak: 1)) < 1e-6)
        #expect(abs(s.lr(step: 50, total: 100, peak: 1) - 0.5) < 1e-6)
    }

    /// One schema for `data:`: `train` and the data commands read the same keys, values and
    /// defaults, strictly, into the same options.
    @Test func dataSectionIsTheOneSchema() throws {
        let c = try load(base + """
          format: chat
          columns: {q: prompt}
          roles: {human: user}
          train_on_inputs: true
          max_seq_len: 512
          over_length: drop
          on_error: skip
          append_eos: false
          add_bos: true
          max_line_bytes: 4096
        """)
        let o = c.data.options
        #expect(o.reader.format == .chat && o.reader.columns == ["q": "prompt"] && o.reader.roles == ["human": "user"])
        #expect(o.encoder.trainOnInputs && !o.encoder.appendEOS && o.encoder.addBOS == true)
        #expect(o.maxSeqLen == 512 && o.lengthPolicy == .drop && o.onError == .skip && o.reader.maxLineBytes == 4096)
        // Defaults: the data module's, one value each.
        let d = try load(base).data.options
        #expect(d == DataOptions())
        #expect(d.maxSeqLen == 1024 && d.lengthPolicy == .truncate && d.onError == .fail)
        for (yaml, key) in [("  over_length: cut\n", "data.over_length"), ("  on_error: fail\n", "data.on_error"),
                            ("  columns: {q: query}\n", "data.columns.q"), ("  roles: {human: boss}\n", "data.roles.human"),
                            ("  max_seq_length: 5\n", "data.max_seq_length")] {
            #expect { try load(base + yaml) } throws: { error in "\(error)".contains(key) }
        }
        // The data commands read a run config's data: section with this schema.
        let dir = try TestScratch.directory("data-schema")
        let path = dir.appendingPathComponent("run.yaml").path
        try (base + "  over_length: drop\n  max_seq_len: 64\n").write(toFile: path, atomically: true, encoding: .utf8)
        var settings = DataSettings()
        settings.configPath = path
        let resolved = try settings.resolve()
        #expect(resolved.lengthPolicy == .drop && resolved.maxSeqLen == 64)
        try (base + "  length_policy: drop\n").write(toFile: path, atomically: true, encoding: .utf8)
        #expect { try settings.resolve() } throws: { error in "\(error)".contains("data.length_policy") && "\(error)".contains("run.yaml") }
    }

    /// Every data command, and eval, takes `--config` with every shipped run config.
    @Test(arguments: try FileManager.default.subpathsOfDirectory(atPath: Fixtures.packageRoot.appendingPathComponent("cluster-configs").path)
              .filter { $0.hasSuffix(".yaml") }.sorted())
    func dataCommandsTakeEveryShippedConfig(config: String) throws {
        let root = Fixtures.packageRoot
        let configPath = root.appendingPathComponent("cluster-configs/\(config)").path
        let model = try Fixtures.smolLM2Path()
        let data = root.appendingPathComponent("data/quickstart/validation.jsonl").path
        let dir = try TestScratch.directory("data-config")
        let commands: [[String]] = [
            ["data", "check", data, "--model", model, "--json", "--no-near-duplicates"],
            ["data", "render", data, "--model", model],
            ["data", "split", data, "--val", "0.1", "--test", "0.1", "--seed", "3", "--out", dir.appendingPathComponent("split").path],
            ["data", "dedup", data, "--out", dir.appendingPathComponent("dedup.jsonl").path],
            ["eval", "--model", model, "--data", data, "--batch", "16", "--json"],
        ]
        for command in commands {
            let r = try runDTrain(ranks: 1, command + ["--config", configPath], timeout: 300)
            #expect(r.status == 0, "dtrain \(command.prefix(2).joined(separator: " ")) --config \(config): exit \(r.status)\n\(r.err)")
        }
    }
}
