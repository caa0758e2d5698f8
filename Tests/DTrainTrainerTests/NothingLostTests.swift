@testable import DTrainCore
import DTrainData
import DTrainTestSupport
@testable import DTrainTrainer
import Foundation
import Testing

/// Runs `dtrain` directly (no mpirun), as a user at a terminal does. `stdin` is fed to its
/// standard input; `whileRunning` gets the pid and the output so far every 50 ms.
func runDTrainDirect(_ args: [String], env extra: [String: String] = [:], stdin: Data? = nil, timeout: Double = 300,
                     whileRunning: ((Int32, String) -> Void)? = nil) throws -> (status: Int32, out: String, err: String) {
    try MemoryGate.admit(ranks: 1, args: args) { try runDTrainDirectNow(args, env: extra, stdin: stdin, timeout: timeout, whileRunning: whileRunning) }
}

private func runDTrainDirectNow(_ args: [String], env extra: [String: String], stdin: Data?, timeout: Double,
                                whileRunning: ((Int32, String) -> Void)?) throws -> (status: Int32, out: String, err: String) {
    let dir = try TestScratch.directory("direct-\(UUID().uuidString.prefix(8))")
    let outPath = dir.appendingPathComponent("out.txt").path, errPath = dir.appendingPathComponent("err.txt").path
    FileManager.default.createFile(atPath: outPath, contents: nil)
    FileManager.default.createFile(atPath: errPath, contents: nil)
    let p = Process()
    p.executableURL = URL(fileURLWithPath: try dtrainBinary())
    p.arguments = args
    var env = ProcessInfo.processInfo.environment
    for (k, v) in extra { env[k] = v }
    p.environment = env
    p.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: outPath))
    p.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: errPath))
    let input = Pipe()
    p.standardInput = stdin == nil ? FileHandle.nullDevice : input
    var unblock = sigset_t()
    sigemptyset(&unblock)
    for s in [SIGUSR1, SIGTERM, SIGINT] { sigaddset(&unblock, s) }
    pthread_sigmask(SIG_UNBLOCK, &unblock, nil)
    try p.run()
    if let stdin {
        DispatchQueue.global().async {
            input.fileHandleForWriting.write(stdin)
            try? input.fileHandleForWriting.close()
        }
    }
    let deadline = Date().addingTimeInterval(timeout)
    while p.isRunning && Date() < deadline {
        whileRunning?(p.processIdentifier, (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "")
        usleep(50_000)
    }
    if p.isRunning { p.terminate(); throw FixtureError(message: "dtrain \(args.first ?? "") did not finish in \(Int(timeout)) s") }
    p.waitUntilExit()
    let out = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "", err = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
    try? FileManager.default.removeItem(at: dir)
    return (p.terminationStatus, out, err)
}

/// Foundation's raw error text, which must never reach a user.
func expectNoRawFoundationText(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) {
    for needle in ["Error Domain=", "NSCocoaErrorDomain", "NSPOSIXErrorDomain", "error 256", "Code=", "couldn’t be completed", "could not be completed"] {
        #expect(!text.contains(needle), "raw Foundation text \"\(needle)\" in: \(text)", sourceLocation: sourceLocation)
    }
}

/// #16: nothing a user does loses work or leaves a lie on disk.
@Suite(.serialized) struct NothingLostTests {
    func load(_ yaml: String, _ overrides: [String] = []) throws -> RunConfig {
        try ConfigLoader.decode(RunConfig.self, yaml: yaml, file: "run.yaml", overrides: overrides)
    }

    /// Every floating-point key refuses NaN, infinities and a number too large for it, in YAML
    /// and through --set, naming the key.
    @Test(arguments: ["data.validation_fraction", "lora.alpha", "lora.dropout", "optim.lr", "optim.eps", "optim.weight_decay",
                      "optim.grad_clip", "schedule.min_lr", "eval.min_delta", "checkpoint.every_minutes"])
    func nonFiniteNumbersAreConfigErrors(key: String) throws {
        let base = "model: /tmp/m.gguf\ndata:\n  train: /tmp/t.jsonl\n"
        for value in ["nan", ".nan", ".inf", "-.inf", "inf", "1e999"] {
            #expect { try load(base, ["\(key)=\(value)"]) } throws: { error in
                guard case ConfigError.invalid(let k, let message) = error else { return false }
                return k == key && message.contains("finite")
            }
        }
        let parts = key.split(separator: ".")
        #expect { try load("model: /tmp/m.gguf\n\(parts[0]):\n  \(parts[1]): .nan\n" + (parts[0] == "data" ? "  train: /tmp/t.jsonl\n" : "data:\n  train: /tmp/t.jsonl\n")) } throws: { error in
            if case ConfigError.invalid(key, _) = error { return true }
            return false
        }
        #expect { try load(base, ["optim.betas=[0.9, .nan]"]) } throws: { error in
            if case ConfigError.invalid("optim.betas", _) = error { return true }
            return false
        }
    }

    /// A NaN gradient in step 4 (the fault hook) stops the run there: status 1, the step and the
    /// first non-finite tensor named, no MPI abort; checkpoints/latest stays step 2, no step-4
    /// checkpoint, no final/ or best/, and every logged loss is finite.
    @Test(arguments: [1, 2])
    func nonFiniteStepStopsBeforeTheUpdate(ranks: Int) throws {
        let run = try resumableRun("nan-\(ranks)", method: "lora")
        let r = try runDTrain(ranks: ranks, ["train", "--config", run.config, "--set", "checkpoint.every_steps=2"] + run.args,
                              env: ["DTRAIN_FAULT": "nan:0:4:3"], timeout: 300)
        #expect(r.status == 1, "exit \(r.status)\n\(r.err)")
        #expect(r.err.contains("step 4:") && r.err.contains("model.layers.3.") && r.err.contains("checkpoints/latest is still step 2"), "\(r.err)")
        #expect(r.err.split(separator: "\n").filter { $0.contains("error:") }.count == 1, "\(r.err)")
        #expect(!r.err.contains("MPI_ABORT") && !r.err.contains("MPI_Abort"), "\(r.err)")
        #expect(try CheckpointInfo.latest(run.out).step == 2)
        #expect(!FileManager.default.fileExists(atPath: run.out + "/checkpoints/step-00000004.h5"))
        #expect(!FileManager.default.fileExists(atPath: run.out + "/final") && !FileManager.default.fileExists(atPath: run.out + "/best"))
        let logged = try losses(run.out)
        #expect(logged.count == 3 && logged.allSatisfy(\.isFinite), "\(logged)")
        // The last good checkpoint resumes.
        let resumed = try runDTrain(ranks: ranks, ["train", "--config", run.config, "--resume", "auto"] + run.args, timeout: 300)
        #expect(resumed.status == 0 && resumed.out.contains("after step 2"), "\(resumed.err)")
        removeRun(config: run.config)
    }

    /// Ctrl-C is a stop request: the step finishes, a checkpoint is written, status 75, and the
    /// run resumes bit for bit. A second Ctrl-C says the stop is under way.
    @Test func ctrlCStopsWithACheckpoint() throws {
        let ref = try reference(method: "lora", ranks: 1)
        let run = try resumableRun("sigint", method: "lora")
        var sent = 0
        let stopped = try runDTrainDirect(["train", "--config", run.config] + run.args) { pid, out in
            if sent == 0 && out.contains("step 2/") { kill(pid, SIGINT); sent = 1; usleep(20_000); kill(pid, SIGINT); sent = 2 }
        }
        #expect(sent == 2)
        #expect(stopped.status == 75, "exit \(stopped.status)\n\(stopped.err)")
        #expect(stopped.out.contains("stopped by SIGINT"), "\(stopped.out)")
        #expect(stopped.err.contains("already stopping"), "\(stopped.err)")
        let at = try CheckpointInfo.latest(run.out).step
        #expect(at >= 2 && at < 6)
        let resumed = try runDTrain(ranks: 1, ["train", "--config", run.config, "--resume", "auto"] + run.args)
        #expect(resumed.status == 0, "\(resumed.err)")
        #expect(try CheckpointInfo.latest(run.out).paramSHA256 == ref.sha)
        removeRun(config: run.config)
    }

    /// The fault hook's SIGINT, mid-accumulation under mpirun's single rank: the same stop.
    @Test func interruptFaultStopsAtTheStepBoundary() throws {
        let run = try resumableRun("sigint-fault", method: "lora")
        let r = try runDTrain(ranks: 1, ["train", "--config", run.config] + run.args, env: ["DTRAIN_FAULT": "interrupt:0:3:1"])
        #expect(r.status == 75, "exit \(r.status)\n\(r.err)")
        #expect(r.out.contains("stopped by SIGINT (Ctrl-C) at step 3/6"), "\(r.out)")
        #expect(try CheckpointInfo.latest(run.out).step == 3)
        removeRun(config: run.config)
    }

    /// A rejected resume (another LoRA rank, another seed, a --resume file that does not exist or
    /// is a directory) exits 2 and leaves config.yaml, checkpoints/latest and metrics.jsonl as
    /// they were; a bad --resume PATH is judged before the model loads.
    @Test func rejectedResumeChangesNothing() throws {
        let run = try smallRun("resume-untouched", method: "lora")
        let first = try runDTrain(ranks: 1, ["train", "--config", run.config, "--set", "train.max_steps=2"], timeout: 300)
        #expect(first.status == 0, "\(first.err)")
        let files = ["config.yaml", "checkpoints/latest", "metrics.jsonl"]
        func snapshot() throws -> [Data] { try files.map { try Data(contentsOf: URL(fileURLWithPath: run.out + "/" + $0)) } }
        let before = try snapshot()
        let listing = try FileManager.default.contentsOfDirectory(atPath: run.out + "/checkpoints").sorted()
        let cases: [([String], String, Bool)] = [
            (["--resume", "auto", "--set", "lora.r=8"], "lora.r", false),
            (["--resume", "auto", "--set", "seed=6"], "seed changed", false),
            (["--resume", run.out + "/checkpoints/nope.h5"], "nope.h5: no such file", true),
            (["--resume", run.out + "/checkpoints"], "is a directory", true),
        ]
        for (args, needle, beforeModel) in cases {
            let r = try runDTrain(ranks: 1, ["train", "--config", run.config, "--set", "train.max_steps=4"] + args, timeout: 300)
            #expect(r.status == 2, "\(args): exit \(r.status)\n\(r.err)")
            #expect(r.err.contains(needle), "\(args): \(r.err)")
            expectNoRawFoundationText(r.err)
            if beforeModel { #expect(!r.out.contains("loaded "), "\(args): the model loaded before the checkpoint was judged\n\(r.out)") }
            #expect(try snapshot() == before, "\(args) changed the output directory")
            #expect(try FileManager.default.contentsOfDirectory(atPath: run.out + "/checkpoints").sorted() == listing)
        }
        removeRun(config: run.config)
    }

    /// File-system problems name the key or argument, the path and the cause in plain words.
    @Test func fileSystemErrorsAreInPlainWords() throws {
        let run = try smallRun("fs-errors", method: "lora")
        let dir = URL(fileURLWithPath: run.config).deletingLastPathComponent().path
        let aFile = dir + "/a-file"
        try Data("x".utf8).write(to: URL(fileURLWithPath: aFile))
        let model = try Fixtures.smolLM2Path()
        let cases: [([String], String)] = [
            (["train", "--config", run.config, "--set", "output_dir=\(aFile)"], "output_dir': \(aFile): is a file, not a directory"),
            (["train", "--config", run.config, "--set", "output_dir=\(aFile)/run"], "\(aFile) is a file, not a directory"),
            (["train", "--config", dir], "is a directory"),
            (["train", "--config", run.config, "--set", "data.train=\(dir)"], "data.train': \(dir): is a directory"),
            (["train", "--config", run.config, "--set", "data.chat_template=\(dir)/none.jinja"], "data.chat_template"),
            (["data", "check", dir, "--model", model], "is a directory"),
            (["eval", "--model", model, "--data", dir], "is a directory"),
        ]
        for (args, needle) in cases {
            let r = try runDTrainDirect(args)
            #expect(r.status == 2 || (args[0] != "train" && r.status == 1), "\(args): exit \(r.status)\n\(r.err)")
            #expect(r.err.contains(needle), "\(args): \(r.err)")
            expectNoRawFoundationText(r.err + r.out)
        }
        // A pipe as the data file (--data /dev/stdin) is read, not mapped.
        let text = try Data(contentsOf: URL(fileURLWithPath: dir + "/train.jsonl"))
        let piped = try runDTrainDirect(["data", "check", "/dev/stdin", "--model", model], stdin: text)
        #expect(piped.status == 0 && piped.out.contains("24"), "exit \(piped.status)\n\(piped.out)\n\(piped.err)")
        let evalPiped = try runDTrainDirect(["eval", "--model", model, "--data", "/dev/stdin", "--json"], stdin: text)
        #expect(evalPiped.status == 0 && evalPiped.out.contains("\"records\":24"), "exit \(evalPiped.status)\n\(evalPiped.out)\n\(evalPiped.err)")
        // The causes a test cannot stage as root, from their errno and Foundation codes.
        #expect(FileProblem.words(errno: EROFS) == "read-only file system")
        #expect(FileProblem.words(errno: ENOSPC).contains("disk full"))
        #expect(FileProblem.cause(of: CocoaError(.fileWriteVolumeReadOnly), path: "/nonexistent-dir/x") == "no such file or directory"
                || FileProblem.errno(of: CocoaError(.fileWriteVolumeReadOnly)) == EROFS)
        #expect(FileProblem.errno(of: CocoaError(.fileWriteNoPermission)) == EACCES)
        #expect(userFacingDescription(CocoaError(.fileWriteOutOfSpace, userInfo: [NSFilePathErrorKey: "/tmp/x"])).contains("disk full"))
        expectNoRawFoundationText(userFacingDescription(CocoaError(.fileReadUnknown)))
        removeRun(config: run.config)
    }

    /// Settings that cannot act in a run this short are warned about once, at start.
    @Test func unreachableSettingsAreWarnedAboutOnce() throws {
        let run = try smallRun("warnings", method: "lora")
        let r = try runDTrain(ranks: 1, ["train", "--config", run.config, "--set", "schedule.warmup_steps=10", "--set", "eval.every_steps=9",
                                         "--set", "data.validation_fraction=0.25", "--set", "checkpoint.every_steps=7"], timeout: 300) // the validation split leaves 3 steps
        #expect(r.status == 0, "\(r.err)")
        for needle in ["schedule.warmup_steps (10) exceeds the run's 3 steps", "eval.every_steps (9) exceeds the run's 3 steps",
                       "checkpoint.every_steps (7) never fires"] {
            #expect(r.err.components(separatedBy: needle).count == 2, "\(needle) not warned once:\n\(r.err)")
        }
        let quiet = try runDTrain(ranks: 1, ["train", "--config", run.config, "--set", "train.max_steps=2", "--set", "checkpoint.every_steps=1"], timeout: 300)
        #expect(!quiet.err.contains("warning: schedule") && !quiet.err.contains("never fires"), "\(quiet.err)")
        removeRun(config: run.config)
    }

    /// Usage errors exit 2 like every other bad input (not argument-parser's 64); --help exits 0.
    @Test func usageErrorsExitTwo() throws {
        let model = try Fixtures.smolLM2Path()
        for (args, needle) in [(["train"], "--config"), (["train", "--config"], "--config"), (["eval", "--model", model], "--data"),
                               (["train", "--bogus", "x", "--config", "y"], "--bogus"), (["frobnicate"], "frobnicate"),
                               (["bench", "step", "--model", model, "--method", "sideways"], "sideways")] {
            let r = try runDTrainDirect(args)
            #expect(r.status == 2, "\(args): exit \(r.status)\n\(r.err)")
            #expect(r.err.contains(needle), "\(args): \(r.err)")
        }
        #expect(try runDTrainDirect(["train", "--help"]).status == 0)
        #expect(try runDTrainDirect(["--help"]).status == 0)
    }

    /// Every config key a message names (`data.x`, `optim.y`, ...) is a key of the schema, and
    /// every `--flag` one names is an option of some command.
    @Test func hintsNameRealKeysAndFlags() throws {
        var known = Set<String>(RunConfig.CodingKeys.allCases.map(\.stringValue))
        let sections: [(String, [String])] = [
            ("data", DataSection.CodingKeys.allCases.map(\.stringValue)), ("lora", LoRASection.CodingKeys.allCases.map(\.stringValue)),
            ("optim", OptimSection.CodingKeys.allCases.map(\.stringValue)), ("schedule", ScheduleSection.CodingKeys.allCases.map(\.stringValue)),
            ("batch", BatchSection.CodingKeys.allCases.map(\.stringValue)), ("train", TrainSection.CodingKeys.allCases.map(\.stringValue)),
            ("eval", EvalSection.CodingKeys.allCases.map(\.stringValue)), ("checkpoint", CheckpointSection.CodingKeys.allCases.map(\.stringValue)),
            ("logging", LoggingSection.CodingKeys.allCases.map(\.stringValue)),
        ]
        for (section, keys) in sections { for k in keys { known.insert("\(section).\(k)") } }
        var flags = Set<String>()
        for command in [["train"], ["eval"], ["tokenize"], ["inspect"], ["data", "check"], ["data", "render"], ["data", "split"],
                        ["data", "dedup"], ["bench", "step"], ["bench", "generate"], ["bench", "checkpoint"], ["generate"], ["chat"], ["export"]] {
            let help = try runDTrainDirect(command + ["--help"])
            for m in help.out.matches(of: #/--([a-z][a-z0-9-]*)/#) { flags.insert(String(m.1)) }
        }
        #expect(flags.contains("config") && flags.contains("chat-template") && flags.contains("max-line-bytes"), "\(flags.sorted())")
        let sources = Fixtures.packageRoot.appendingPathComponent("Sources")
        let files = FileManager.default.enumerator(at: sources, includingPropertiesForKeys: nil)!.compactMap { $0 as? URL }.filter { $0.pathExtension == "swift" }
        var checked = 0
        for file in files {
            let lines = try String(contentsOf: file, encoding: .utf8).split(separator: "\n")
            for (i, line) in lines.enumerated() where line.contains("HINT") || (i > 0 && lines[i - 1].contains("HINT")) {
                for literal in line.matches(of: #/"([^"\\]|\\.)*"/#) {
                    let text = String(literal.0)
                    for m in text.matches(of: #/\b(data|lora|optim|schedule|batch|train|eval|checkpoint|logging)\.([a-z_]+)\b(?!\.)/#) {
                        let key = "\(m.1).\(m.2)"
                        checked += 1
                        #expect(known.contains(key), "\(file.lastPathComponent):\(i + 1) names \(key), not a config key")
                    }
                    for m in text.matches(of: #/(?:^|[^a-z-])--([a-z][a-z0-9-]*)/#) {
                        checked += 1
                        #expect(flags.contains(String(m.1)), "\(file.lastPathComponent):\(i + 1) names --\(m.1), not an option of any command")
                    }
                }
            }
        }
        #expect(checked > 10, "only \(checked) keys and flags found in hints")
    }

    /// 200 mutated JSONL lines (byte flips, truncations, deep nesting, huge numbers, wrong types)
    /// through `data check` and `train`: no crash, no hang, every line accepted or reported with
    /// its line number.
    @Test func fuzzedLinesAreAcceptedOrReported() throws {
        let run = try smallRun("fuzz", method: "lora")
        let dir = URL(fileURLWithPath: run.config).deletingLastPathComponent()
        let bases = [#"{"text": "The fox counted to 42 and ran home."}"#, #"{"text": "Ünïcödé text, emoji 🦊, and \"quotes\"."}"#,
                     #"{"text": "short"}"#, #"{"text": "a longer line with several words in it to flip bytes of"}"#]
        var rng = UInt64(0x5EED)
        func next() -> Int { rng = CounterRandom.mix(rng); return Int(rng >> 33) }
        var data = Data()
        var rawLines: [[UInt8]] = []
        for i in 0..<200 {
            var bytes = Array(bases[i % bases.count].utf8)
            switch i % 8 {  // 0, 1 byte flips; 2 truncation; 3 deep nesting; 4 huge numbers; 5 wrong types; 6 raw bytes; 7 valid
            case 0, 1: for _ in 0..<(1 + next() % 3) { bytes[next() % bytes.count] ^= UInt8(1 << (next() % 8)) }
            case 2: bytes = Array(bytes.prefix(1 + next() % (bytes.count - 1)))
            case 3:
                let depth = [10, 100, 1000, 100_000][next() % 4]
                bytes = Array(("{\"text\": " + String(repeating: "[", count: depth) + String(repeating: "]", count: depth) + "}").utf8)
            case 4:
                bytes = Array(["{\"text\": 1e999999}", "{\"text\": \"x\", \"n\": -1e400}", "{\"text\": 123456789012345678901234567890}",
                               "{\"prompt\": \"a\", \"completion\": 1e308}"][next() % 4].utf8)
            case 5:
                bytes = Array(["{\"text\": null}", "{\"text\": [\"a\"]}", "{\"text\": {\"a\": 1}}", "[1, 2]", "\"text\"", "42",
                               "{\"messages\": \"hi\"}", "{\"text\": true}"][next() % 8].utf8)
            case 6: bytes = (0..<(1 + next() % 40)).map { _ in UInt8(next() % 256) }
            default: break
            }
            // A mutation must not split or blank the line: that would change the line numbers under test.
            bytes = bytes.map { $0 == 0x0A || $0 == 0x0D ? 0x20 : $0 }
            if bytes.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { bytes = Array("x".utf8) }
            rawLines.append(bytes)
            data.append(contentsOf: bytes)
            data.append(0x0A)
        }
        let file = dir.appendingPathComponent("fuzz.jsonl")
        try data.write(to: file)
        let model = try Fixtures.smolLM2Path()
        let check = try runDTrainDirect(["data", "check", file.path, "--model", model, "--format", "text", "--json"], timeout: 120)
        #expect(check.status == 0 || check.status == 1, "exit \(check.status)\n\(check.err)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(check.out.utf8)) as? [String: Any], "\(check.out)\n\(check.err)")
        let valid = report["valid"] as? Int ?? -1, invalid = report["invalid"] as? Int ?? -1
        #expect(valid + invalid == 200, "valid \(valid) + invalid \(invalid)")
        #expect(valid >= 25 && invalid >= 50, "valid \(valid), invalid \(invalid)")
        let reported = (report["invalid_records"] as? [[String: Any]] ?? []).compactMap { $0["line"] as? Int }
        #expect(reported.count == invalid && Set(reported).count == invalid && reported.allSatisfy { (1...200).contains($0) }, "\(reported)")
        // Every valid base line is accepted.
        for (i, bytes) in rawLines.enumerated() where i % 8 == 7 { #expect(!reported.contains(i + 1), "line \(i + 1): \(String(decoding: bytes, as: UTF8.self))") }

        let train = try runDTrain(ranks: 1, ["train", "--config", run.config, "--set", "data.train=\(file.path)", "--set", "data.on_error=skip",
                                             "--set", "data.format=text", "--set", "train.max_steps=1"], timeout: 300)
        #expect(train.status == 0, "exit \(train.status)\n\(train.err)")
        #expect(train.out.contains("\(invalid) invalid records skipped"), "\(train.out)")
        let strict = try runDTrain(ranks: 1, ["train", "--config", run.config, "--set", "data.train=\(file.path)", "--set", "data.format=text"], timeout: 300)
        #expect(strict.status == 2 && strict.err.contains("fuzz.jsonl:\(reported.min() ?? 0)"), "exit \(strict.status)\n\(strict.err)")
        removeRun(config: run.config)
    }

    /// A UTF-8 byte-order mark before the first line (Excel, Notepad) is skipped, for every format.
    @Test func byteOrderMarkIsSkipped() throws {
        let bom: [UInt8] = [0xEF, 0xBB, 0xBF]
        for (line, format) in [(#"{"text": "hello"}"#, RecordFormat.text), (#"{"prompt": "a", "completion": "b"}"#, .promptCompletion),
                               (#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}"#, .chat)] {
            var reader = DataRecordReader(name: "bom.jsonl", bytes: Data(bom + Array((line + "\n" + line + "\n").utf8)))
            let records = reader.readAll()
            #expect(records.count == 2 && records[0].line == 1, "\(records)")
            #expect(records.allSatisfy { (try? $0.result.get())?.format == format }, "\(format): \(records)")
            #expect(reader.format == format)
        }
    }
}
