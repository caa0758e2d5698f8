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
}
