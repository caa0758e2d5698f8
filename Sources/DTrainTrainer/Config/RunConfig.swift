import DTrainCore
import DTrainData
import Foundation
import Yams

/// Everything a training run needs, decoded from YAML (see the README's "Run config" table).
/// Defaults hold for every absent key; unknown keys are errors.
public struct RunConfig: Codable, Equatable {
    public enum Method: String, Codable, Equatable { case full, lora }

    /// A `.gguf` file or a Hugging Face model directory.
    public var model: String
    public var method: Method = .lora
    /// Root of every random draw and of the data order.
    public var seed: UInt64 = 1234
    public var outputDir: String = "runs/dtrain"
    /// BLAS and element-wise threads per rank; nil = cores per node / ranks per node.
    public var threads: Int?
    /// Recompute layer activations in backward (gradient checkpointing).
    public var recompute: Bool = false
    public var data = DataSection()
    public var lora = LoRASection()
    public var optim = OptimSection()
    public var schedule = ScheduleSection()
    public var batch = BatchSection()
    public var train = TrainSection()
    public var eval = EvalSection()
    public var checkpoint = CheckpointSection()
    public var logging = LoggingSection()

    enum CodingKeys: String, CodingKey, CaseIterable {
        case model, method, seed, outputDir = "output_dir", threads, recompute
        case data, lora, optim, schedule, batch, train, eval, checkpoint, logging
    }

    public init(model: String) { self.model = model }

    public init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        guard let model: String = try c.optional(.model, "a path to a .gguf file or a model directory") else {
            throw ConfigError.missing(key: "model", expected: "a path to a .gguf file or a Hugging Face model directory")
        }
        self.model = expandingTilde(model)
        let d = Self(model: model)  // every default is the property initialiser's
        method = try c.value(.method, or: d.method, "full or lora")
        seed = try c.value(.seed, or: d.seed, "a non-negative integer")
        outputDir = expandingTilde(try c.value(.outputDir, or: d.outputDir, "a directory path"))
        threads = try c.optional(.threads, "an integer (threads per rank)")
        recompute = try c.value(.recompute, or: d.recompute, "true or false")
        data = try c.value(.data, or: DataSection(), "a section")
        lora = try c.value(.lora, or: LoRASection(), "a section")
        optim = try c.value(.optim, or: OptimSection(), "a section")
        schedule = try c.value(.schedule, or: ScheduleSection(), "a section")
        batch = try c.value(.batch, or: BatchSection(), "a section")
        train = try c.value(.train, or: TrainSection(), "a section")
        eval = try c.value(.eval, or: EvalSection(), "a section")
        checkpoint = try c.value(.checkpoint, or: CheckpointSection(), "a section")
        logging = try c.value(.logging, or: LoggingSection(), "a section")
    }

    /// Loads a YAML file and applies `--set` overrides.
    public static func load(path: String, overrides: [String] = []) throws -> RunConfig {
        let text: String
        do { text = String(decoding: try FileOperation.read(path, mapped: false), as: UTF8.self) } catch let error as FileError {
            throw ConfigError.unreadable(file: path, reason: error.cause)
        }
        return try ConfigLoader.decode(RunConfig.self, yaml: text, file: path, overrides: overrides)
    }

    /// The effective config as YAML (printed at start, stored in the run directory).
    public func yaml() -> String {
        (try? YAMLEncoder().encode(self)) ?? "\(self)"
    }

    /// Cross-field rules that need no files; `validate(worldSize:)` adds the batch arithmetic.
    public func validate(worldSize: Int) throws {
        func bad(_ key: String, _ message: String) -> ConfigError { .invalid(key: key, message: message) }
        if data.train.isEmpty { throw ConfigError.missing(key: "data.train", expected: "one or more JSONL files") }
        if data.maxSeqLen < 2 { throw bad("data.max_seq_len", "must be at least 2, got \(data.maxSeqLen)") }
        if !(0..<1).contains(data.validationFraction) { throw bad("data.validation_fraction", "must be in [0, 1), got \(data.validationFraction)") }
        if method == .lora {
            if lora.r < 1 { throw bad("lora.r", "must be at least 1, got \(lora.r)") }
            if !(0..<1).contains(lora.dropout) { throw bad("lora.dropout", "must be in [0, 1), got \(lora.dropout)") }
            if lora.targets.isEmpty { throw bad("lora.targets", "needs at least one projection") }
        }
        if optim.lr <= 0 { throw bad("optim.lr", "must be positive, got \(optim.lr)") }
        if optim.betas.count != 2 || optim.betas.contains(where: { !(0..<1).contains($0) }) {
            throw bad("optim.betas", "must be two numbers in [0, 1), got \(optim.betas)")
        }
        if optim.gradClip < 0 { throw bad("optim.grad_clip", "must be 0 (off) or positive") }
        if schedule.warmupSteps < 0 { throw bad("schedule.warmup_steps", "must be non-negative") }
        if batch.micro < 1 { throw bad("batch.micro", "must be at least 1, got \(batch.micro)") }
        switch (batch.globalExamples, batch.globalTokens) {
        case (nil, nil): throw ConfigError.missing(key: "batch.global_examples", expected: "examples per optimizer step (or batch.global_tokens)")
        case (.some, .some): throw bad("batch.global_tokens", "give batch.global_examples or batch.global_tokens, not both")
        case (let g?, nil):
            if g < 1 { throw bad("batch.global_examples", "must be at least 1") }
            if g % (worldSize * batch.micro) != 0 {
                throw bad("batch.micro", "global_examples (\(g)) must be a multiple of ranks x micro = \(worldSize) x \(batch.micro); "
                          + "HINT: with \(worldSize) ranks, micro could be one of \(divisors(g / max(1, g % worldSize == 0 ? worldSize : 1)).filter { g % (worldSize * $0) == 0 })")
            }
        case (nil, let t?):
            if t < data.maxSeqLen { throw bad("batch.global_tokens", "must be at least data.max_seq_len (\(data.maxSeqLen))") }
        }
        if train.epochs < 1 && train.maxSteps == nil { throw bad("train.epochs", "must be at least 1 (or set train.max_steps)") }
        if let m = train.maxSteps, m < 1 { throw bad("train.max_steps", "must be at least 1") }
        if eval.everySteps < 0 { throw bad("eval.every_steps", "must be 0 (only at the end) or positive") }
        if eval.patience < 0 { throw bad("eval.patience", "must be 0 (no early stopping) or positive") }
        if eval.generateEvery < 0 { throw bad("eval.generate_every", "must be 0 (never) or positive") }
        if eval.maxNewTokens < 1 { throw bad("eval.max_new_tokens", "must be at least 1") }
        if eval.generateEvery > 0 && data.validation == nil {
            throw bad("eval.generate_every", "needs data.validation files: answers are scored against the records' references")
        }
        if eval.metricIsTask {
            if eval.generateEvery == 0 { throw bad("eval.metric", "\(eval.metric) is a task metric: set eval.generate_every (e.g. to eval.every_steps)") }
            if !eval.metrics.contains(eval.metric) { throw bad("eval.metric", "\(eval.metric) is not among eval.metrics \(eval.metrics)") }
        }
        if checkpoint.everySteps < 0 { throw bad("checkpoint.every_steps", "must be 0 (off) or positive") }
        if checkpoint.everyMinutes < 0 { throw bad("checkpoint.every_minutes", "must be 0 (off) or positive") }
        if checkpoint.keepLast < 1 { throw bad("checkpoint.keep_last", "must be at least 1") }
        if let t = threads, t < 1 { throw bad("threads", "must be at least 1") }
    }

    /// Checks that every file the run reads can be read (the model, the data files, the
    /// template) and that `output_dir` is, or can become, a writable directory.
    public func checkFiles() throws {
        guard FileManager.default.fileExists(atPath: model) else {
            throw ConfigError.invalid(key: "model", message: "\(model): no such file or directory. HINT: bash launch/fetch-model.sh prints the demo model's path")
        }
        for (key, paths) in [("data.train", data.train), ("data.validation", data.validation ?? [])] {
            for path in paths {
                if let problem = FileProblem.readProblem(path) { throw ConfigError.invalid(key: key, message: "\(path): \(problem)") }
            }
        }
        if let t = data.chatTemplate, let problem = FileProblem.readProblem(t) {
            throw ConfigError.invalid(key: "data.chat_template", message: "\(t): \(problem)")
        }
        if let problem = FileProblem.directoryProblem(outputDir) {
            throw ConfigError.invalid(key: "output_dir", message: "\(outputDir): \(problem)")
        }
    }

    private func divisors(_ n: Int) -> [Int] { (1...max(n, 1)).filter { n % $0 == 0 } }
}

/// `data:` where examples come from and how they become token sequences.
public struct DataSection: Codable, Equatable {
    /// The defaults of every key that shapes examples: the data module's, so that `train`, the
    /// `data` commands and `eval` share one value for each.
    static let defaults = DataOptions()

    public var train: [String] = []
    public var validation: [String]? = nil
    /// Held-out share of the training data when no validation file is given (by example hash).
    public var validationFraction: Double = 0.05
    /// auto, text, prompt_completion, chat or instruction.
    public var format: String = "auto"
    /// Maps other column names onto the format's (e.g. question: prompt).
    public var columns: [String: String] = defaults.reader.columns
    /// Renames chat roles (e.g. human: user).
    public var roles: [String: String] = defaults.reader.roles
    /// A .jinja file or tokenizer_config.json overriding the model's chat template.
    public var chatTemplate: String? = defaults.chatTemplate
    public var maxSeqLen: Int = defaults.maxSeqLen
    /// truncate, drop or error.
    public var overLength: String = defaults.lengthPolicy.rawValue
    public var packing: Bool = true
    public var trainOnInputs: Bool = defaults.encoder.trainOnInputs
    /// Render prompt/completion records through the chat template instead of concatenating them.
    public var promptCompletionTemplate: Bool = defaults.encoder.promptCompletionUsesTemplate
    /// EOS after text and plain prompt/completion examples.
    public var appendEOS: Bool = defaults.encoder.appendEOS
    /// BOS before them; nil follows the tokenizer.
    public var addBOS: Bool? = defaults.encoder.addBOS
    /// error or skip.
    public var onError: String = DataSection.name(of: defaults.onError)
    /// Longest line accepted, in bytes.
    public var maxLineBytes: Int = defaults.reader.maxLineBytes

    enum CodingKeys: String, CodingKey, CaseIterable {
        case train, validation, validationFraction = "validation_fraction", format, columns, roles
        case chatTemplate = "chat_template", maxSeqLen = "max_seq_len", overLength = "over_length"
        case packing, trainOnInputs = "train_on_inputs", promptCompletionTemplate = "prompt_completion_template"
        case appendEOS = "append_eos", addBOS = "add_bos", onError = "on_error", maxLineBytes = "max_line_bytes"
    }

    /// The config's name for an error policy (`error` for `ErrorPolicy.fail`).
    static func name(of policy: ErrorPolicy) -> String { policy == .fail ? "error" : policy.rawValue }

    public init() {}
    public init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = DataSection()
        train = (try c.stringList(.train) ?? []).map(expandingTilde)
        validation = try c.stringList(.validation)?.map(expandingTilde)
        validationFraction = try c.value(.validationFraction, or: d.validationFraction, "a fraction in [0, 1)")
        format = try c.value(.format, or: d.format, "auto, text, prompt_completion, chat or instruction")
        let formats = ["auto"] + RecordFormat.allCases.map(\.rawValue)
        guard formats.contains(format) else { throw ConfigError.invalid(key: "data.format", message: "expected one of \(formats), got '\(format)'") }
        columns = try c.value(.columns, or: d.columns, "a mapping of column names")
        roles = try c.value(.roles, or: d.roles, "a mapping of role names")
        chatTemplate = (try c.optional(.chatTemplate, "a path to a .jinja file or tokenizer_config.json") as String?).map(expandingTilde)
        maxSeqLen = try c.value(.maxSeqLen, or: d.maxSeqLen, "an integer (tokens)")
        overLength = try c.value(.overLength, or: d.overLength, "truncate, drop or error")
        guard LengthPolicy(rawValue: overLength) != nil else {
            throw ConfigError.invalid(key: "data.over_length", message: "expected truncate, drop or error, got '\(overLength)'")
        }
        packing = try c.value(.packing, or: d.packing, "true or false")
        trainOnInputs = try c.value(.trainOnInputs, or: d.trainOnInputs, "true or false")
        promptCompletionTemplate = try c.value(.promptCompletionTemplate, or: d.promptCompletionTemplate, "true or false")
        appendEOS = try c.value(.appendEOS, or: d.appendEOS, "true or false")
        addBOS = try c.optional(.addBOS, "true, false or null (follow the tokenizer)")
        onError = try c.value(.onError, or: d.onError, "error or skip")
        guard ["error", "skip"].contains(onError) else {
            throw ConfigError.invalid(key: "data.on_error", message: "expected error or skip, got '\(onError)'")
        }
        maxLineBytes = try c.value(.maxLineBytes, or: d.maxLineBytes, "a number of bytes")
        do { try options.validate() } catch let error as DataOptionsError {
            throw ConfigError.invalid(key: "data.\(error.key)", message: error.problem)
        }
    }

    /// The data module's options for this section: what every command reads examples with.
    public var options: DataOptions {
        DataOptions(reader: ReaderOptions(format: format == "auto" ? nil : RecordFormat(rawValue: format), columns: columns,
                                          roles: roles, maxLineBytes: maxLineBytes),
                    encoder: EncoderOptions(trainOnInputs: trainOnInputs, promptCompletionUsesTemplate: promptCompletionTemplate,
                                            appendEOS: appendEOS, addBOS: addBOS),
                    chatTemplate: chatTemplate, maxSeqLen: maxSeqLen,
                    lengthPolicy: LengthPolicy(rawValue: overLength) ?? Self.defaults.lengthPolicy,
                    onError: onError == "skip" ? .skip : .fail)
    }
}

/// `lora:` adapter shape (used when method is lora).
public struct LoRASection: Codable, Equatable {
    public var r: Int = 8
    public var alpha: Float = 16
    public var dropout: Float = 0.05
    public var rslora: Bool = false
    public var targets: [LoRATarget] = LoRATarget.allCases

    enum CodingKeys: String, CodingKey, CaseIterable { case r, alpha, dropout, rslora, targets }
    public init() {}
    public init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = Self()  // every default is the property initialiser's
        r = try c.value(.r, or: d.r, "an integer rank")
        alpha = try c.value(.alpha, or: d.alpha, "a number")
        dropout = try c.value(.dropout, or: d.dropout, "a probability in [0, 1)")
        rslora = try c.value(.rslora, or: d.rslora, "true or false")
        let names: [String] = try c.value(.targets, or: d.targets.map(\.rawValue), "a list of projection names")
        targets = try names.map { name in
            guard let t = LoRATarget(rawValue: name) else {
                throw ConfigError.invalid(key: "lora.targets", message: "unknown projection '\(name)'; expected some of \(LoRATarget.allCases.map(\.rawValue))")
            }
            return t
        }
    }

    /// The core's LoRA configuration.
    public var coreConfig: LoRAConfig { LoRAConfig(rank: r, alpha: alpha, dropout: dropout, useRSLoRA: rslora, targets: targets) }
}

/// `optim:` AdamW.
public struct OptimSection: Codable, Equatable {
    public var lr: Float = 2e-4
    public var betas: [Float] = [0.9, 0.999]
    public var eps: Float = 1e-8
    public var weightDecay: Float = 0
    /// Clip the global gradient norm to this (0 = off).
    public var gradClip: Float = 1

    enum CodingKeys: String, CodingKey, CaseIterable { case lr, betas, eps, weightDecay = "weight_decay", gradClip = "grad_clip" }
    public init() {}
    public init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = Self()  // every default is the property initialiser's
        lr = try c.value(.lr, or: d.lr, "a positive number")
        betas = try c.value(.betas, or: d.betas, "two numbers, like [0.9, 0.999]")
        eps = try c.value(.eps, or: d.eps, "a small positive number")
        weightDecay = try c.value(.weightDecay, or: d.weightDecay, "a number")
        gradClip = try c.value(.gradClip, or: d.gradClip, "a number (0 = off)")
    }

    /// The core's AdamW settings (`validate` has checked that `betas` holds two numbers).
    public var hyper: AdamWHyper {
        AdamWHyper(beta1: betas[0], beta2: betas[1], eps: eps, weightDecay: weightDecay)
    }
}

/// `schedule:` learning-rate schedule.
public struct ScheduleSection: Codable, Equatable {
    /// cosine, linear or constant (after warm-up).
    public var type: String = "cosine"
    public var warmupSteps: Int = 0
    public var minLr: Float = 0

    enum CodingKeys: String, CodingKey, CaseIterable { case type, warmupSteps = "warmup_steps", minLr = "min_lr" }
    public init() {}
    public init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = Self()  // every default is the property initialiser's
        type = try c.value(.type, or: d.type, "cosine, linear or constant")
        guard ["cosine", "linear", "constant"].contains(type) else {
            throw ConfigError.invalid(key: "schedule.type", message: "expected cosine, linear or constant, got '\(type)'")
        }
        warmupSteps = try c.value(.warmupSteps, or: d.warmupSteps, "an integer")
        minLr = try c.value(.minLr, or: d.minLr, "a number")
    }

    /// Learning rate at 1-based `step` of `total`, peaking at `peak` after warm-up.
    public func lr(step: Int, total: Int, peak: Float) -> Float {
        if warmupSteps > 0 && step <= warmupSteps { return peak * Float(step) / Float(warmupSteps) }
        let span = max(1, total - warmupSteps)
        let progress = min(1, Float(step - warmupSteps) / Float(span))
        switch type {
        case "linear": return minLr + (peak - minLr) * (1 - progress)
        case "constant": return peak
        default: return minLr + (peak - minLr) * 0.5 * (1 + cos(Float.pi * progress))
        }
    }
}

/// `batch:` how many examples make one optimizer step, and how they are split.
public struct BatchSection: Codable, Equatable {
    /// Examples per optimizer step over all ranks.
    public var globalExamples: Int? = nil
    /// Alternatively, tokens per optimizer step (examples are taken in order up to this budget).
    public var globalTokens: Int? = nil
    /// Examples per forward/backward on one rank; accumulation = global / (ranks x micro).
    public var micro: Int = 4

    enum CodingKeys: String, CodingKey, CaseIterable { case globalExamples = "global_examples", globalTokens = "global_tokens", micro }
    public init() { globalExamples = 16 }
    public init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = Self()  // every default is the property initialiser's
        globalExamples = try c.optional(.globalExamples, "an integer")
        globalTokens = try c.optional(.globalTokens, "an integer")
        if globalExamples == nil && globalTokens == nil { globalExamples = d.globalExamples }
        micro = try c.value(.micro, or: d.micro, "an integer")
    }
}

/// `train:` how long to train.
public struct TrainSection: Codable, Equatable {
    public var epochs: Int = 1
    /// Stops after this many optimizer steps even if epochs remain.
    public var maxSteps: Int? = nil

    enum CodingKeys: String, CodingKey, CaseIterable { case epochs, maxSteps = "max_steps" }
    public init() {}
    public init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = Self()  // every default is the property initialiser's
        epochs = try c.value(.epochs, or: d.epochs, "an integer")
        maxSteps = try c.optional(.maxSteps, "an integer")
    }
}

/// `eval:` validation and early stopping.
public struct EvalSection: Codable, Equatable {
    /// Validate every N steps (0 = only at the end); always at the end.
    public var everySteps: Int = 50
    /// Stop after this many validations without improvement (0 = never stop early).
    public var patience: Int = 0
    /// Improvement smaller than this does not count.
    public var minDelta: Double = 0
    /// val_loss (lower is better).
    public var metric: String = "val_loss"
    /// Also validate before the first step (the "before" figure).
    public var atStart: Bool = true
    /// At a validation whose step is a multiple of this (and at the start and the end), also
    /// answer the validation records greedily and report task metrics (0: never).
    public var generateEvery: Int = 0
    /// The task metrics reported: exact_match, token_f1, rouge_l, bleu.
    public var metrics: [String] = TaskScores.generationMetrics
    /// Most tokens generated per answer.
    public var maxNewTokens: Int = 64

    /// Whether `metric` is a task metric (higher is better) rather than a loss.
    public var metricIsTask: Bool { TaskScores.generationMetrics.contains(metric) }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case everySteps = "every_steps", patience, minDelta = "min_delta", metric, atStart = "at_start"
        case generateEvery = "generate_every", metrics, maxNewTokens = "max_new_tokens"
    }
    public init() {}
    public init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = Self()  // every default is the property initialiser's
        everySteps = try c.value(.everySteps, or: d.everySteps, "an integer")
        patience = try c.value(.patience, or: d.patience, "an integer")
        minDelta = try c.value(.minDelta, or: d.minDelta, "a number")
        metric = try c.value(.metric, or: d.metric, "val_loss")
        let names = ["val_loss", "val_ppl"] + TaskScores.generationMetrics
        guard names.contains(metric) else {
            throw ConfigError.invalid(key: "eval.metric", message: "expected one of \(names.joined(separator: ", ")), got '\(metric)'")
        }
        atStart = try c.value(.atStart, or: d.atStart, "true or false")
        generateEvery = try c.value(.generateEvery, or: d.generateEvery, "an integer")
        metrics = try c.value(.metrics, or: d.metrics, "a list of task metric names")
        if let unknown = metrics.first(where: { !TaskScores.generationMetrics.contains($0) }) {
            throw ConfigError.invalid(key: "eval.metrics", message: "expected names among \(TaskScores.generationMetrics.joined(separator: ", ")), got '\(unknown)'")
        }
        maxNewTokens = try c.value(.maxNewTokens, or: d.maxNewTokens, "an integer")
    }
}

/// `checkpoint:` how often state is saved and how many files are kept.
public struct CheckpointSection: Codable, Equatable {
    /// Save every N steps (0: not by step count). A checkpoint is also written at the end and
    /// when a signal stops the run.
    public var everySteps: Int = 0
    /// Save when this many minutes have passed since the last checkpoint (0: not by time).
    public var everyMinutes: Double = 0
    /// Checkpoints kept: the newest N, plus the one with the best validation loss.
    public var keepLast: Int = 2

    enum CodingKeys: String, CodingKey, CaseIterable { case everySteps = "every_steps", everyMinutes = "every_minutes", keepLast = "keep_last" }
    public init() {}
    public init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = Self()  // every default is the property initialiser's
        everySteps = try c.value(.everySteps, or: d.everySteps, "an integer")
        everyMinutes = try c.value(.everyMinutes, or: d.everyMinutes, "a number")
        keepLast = try c.value(.keepLast, or: d.keepLast, "an integer")
    }
}

/// `logging:` console, metrics.jsonl and TensorBoard.
public struct LoggingSection: Codable, Equatable {
    /// Print a step line every N steps.
    public var everySteps: Int = 1
    public var tensorboard: Bool = true

    enum CodingKeys: String, CodingKey, CaseIterable { case everySteps = "every_steps", tensorboard }
    public init() {}
    public init(from decoder: Decoder) throws {
        try decoder.rejectUnknownKeys(CodingKeys.self)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = Self()  // every default is the property initialiser's
        everySteps = try c.value(.everySteps, or: d.everySteps, "an integer")
        tensorboard = try c.value(.tensorboard, or: d.tensorboard, "true or false")
    }
}
