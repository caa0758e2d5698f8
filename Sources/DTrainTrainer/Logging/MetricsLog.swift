// The run's machine-readable log: `metrics.jsonl` in the output directory, one JSON object per
// line, mirrored to TensorBoard when a writer is given. Written by rank 0 only.
//
//     {"kind":"train","step":120,"loss":2.1345,"lr":0.00029,"grad_norm":0.81,"tokens_per_s":1120,"elapsed_s":110.4,"tokens":122880}
//     {"kind":"val","step":200,"val_loss":2.0412,"val_ppl":7.7004}
import DTrainCore
import Foundation

/// Appends training and validation metrics to `metrics.jsonl`, one line per call.
///
/// Each line goes to the kernel in a single `write(2)` as soon as it is logged, so a crash loses at
/// most the line being written. Keys come in a fixed order (`kind`, `step`, the metrics, then the
/// extras sorted by name). Non-finite values (a diverged loss) are written as `null`, keeping every
/// line strict JSON. A write failure is reported once on standard error and disables the log:
/// the training run goes on.
public final class MetricsLog {
    /// How an existing `metrics.jsonl` is treated when the log opens.
    public enum Mode: Equatable, Sendable {
        /// A new run: any existing file is emptied (and a TensorBoard writer, if given, gets a
        /// session-start mark at step 0, hiding older event files' scalars in the same directory).
        case fresh
        /// Resuming from the checkpoint of `resumeStep`: lines with a step above it (logged after
        /// that checkpoint by the interrupted run, and about to be logged again) are dropped, as is
        /// an unfinished last line; new lines are appended. The finished log then reads as if the
        /// run had never stopped. A TensorBoard writer, if given, gets a session-start mark at
        /// `resumeStep + 1`, so TensorBoard drops the same steps from the older event files.
        case append(resumeStep: Int)
    }

    /// The file name inside the output directory.
    public static let fileName = "metrics.jsonl"

    /// Keys `step(...)` writes itself; extras by these names are ignored.
    public static let reservedKeys: Set<String> = ["kind", "step", "loss", "lr", "grad_norm", "tokens_per_s"]

    /// The `metrics.jsonl` being written.
    public let fileURL: URL
    /// Where each scalar is mirrored, if anywhere.
    public let tensorBoard: TensorBoardWriter?

    private let file: AppendOnlyFile
    private var failed = false

    /// Opens `directory/metrics.jsonl` (creating the directory if needed) according to `mode`.
    public init(directory: URL, mode: Mode = .fresh, tensorBoard: TensorBoardWriter? = nil) throws {
        try ensureDirectory(directory)
        fileURL = directory.appendingPathComponent(MetricsLog.fileName)
        self.tensorBoard = tensorBoard
        switch mode {
        case .fresh:
            file = try AppendOnlyFile(path: fileURL.path, truncate: true)
            tensorBoard?.markSessionStart(atStep: 0)
        case .append(let resumeStep):
            try MetricsLog.dropLines(after: resumeStep, in: fileURL)
            file = try AppendOnlyFile(path: fileURL.path)
            tensorBoard?.markSessionStart(atStep: resumeStep + 1)
        }
    }

    deinit { close() }

    /// Logs one optimizer step: `{"kind":"train","step":…,"loss":…,"lr":…,"grad_norm":…,"tokens_per_s":…}`
    /// plus `extra` (e.g. `tokens`, `elapsed_s`); mirrored to TensorBoard as `train/<key>`.
    public func step(step: Int, loss: Double, lr: Double, gradNorm: Double, tokensPerSecond: Double,
                     extra: [String: Double] = [:]) {
        let extras = extra.filter { !MetricsLog.reservedKeys.contains($0.key) }.sorted { $0.key < $1.key }
        var line = JSONLineBuilder()
        line.add("kind", string: "train")
        line.add("step", step)
        line.add("loss", loss)
        line.add("lr", lr)
        line.add("grad_norm", gradNorm)
        line.add("tokens_per_s", tokensPerSecond)
        for (key, value) in extras { line.add(key, value) }
        append(line.finished())

        guard let tensorBoard else { return }
        let wallTime = Date().timeIntervalSince1970
        tensorBoard.scalar("train/loss", loss, step: step, wallTime: wallTime)
        tensorBoard.scalar("train/lr", lr, step: step, wallTime: wallTime)
        tensorBoard.scalar("train/grad_norm", gradNorm, step: step, wallTime: wallTime)
        tensorBoard.scalar("train/tokens_per_s", tokensPerSecond, step: step, wallTime: wallTime)
        for (key, value) in extras { tensorBoard.scalar("train/\(key)", value, step: step, wallTime: wallTime) }
        tensorBoard.flush()
    }

    /// Logs one validation pass: `{"kind":"val","step":…,"val_loss":…,"val_ppl":…}`; mirrored to
    /// TensorBoard as `val/loss` and `val/ppl`.
    /// `tasks`: task metrics of the validation answers (`exact_match`, ...), when computed.
    public func validation(step: Int, valLoss: Double, valPerplexity: Double, tasks: [String: Double] = [:]) {
        var line = JSONLineBuilder()
        line.add("kind", string: "val")
        line.add("step", step)
        line.add("val_loss", valLoss)
        line.add("val_ppl", valPerplexity)
        for (key, value) in tasks.sorted(by: { $0.key < $1.key }) { line.add(key, value) }
        append(line.finished())

        guard let tensorBoard else { return }
        let wallTime = Date().timeIntervalSince1970
        tensorBoard.scalar("val/loss", valLoss, step: step, wallTime: wallTime)
        tensorBoard.scalar("val/ppl", valPerplexity, step: step, wallTime: wallTime)
        for (key, value) in tasks.sorted(by: { $0.key < $1.key }) { tensorBoard.scalar("val/\(key)", value, step: step, wallTime: wallTime) }
        tensorBoard.flush()
    }

    /// Closes the file (and not the TensorBoard writer, which the caller owns). Safe to call twice.
    public func close() {
        file.closeFile()
    }

    private func append(_ line: String) {
        guard !failed else { return }
        do {
            try file.append(Array(line.utf8))
        } catch {
            failed = true
            printError("warning: metrics log stopped: \(error)")
        }
    }

    // MARK: Resuming

    /// Just enough of a line to read its step.
    private struct StepField: Decodable { let step: Int }

    /// Rewrites `url` keeping only complete lines whose `step` is at most `resumeStep`. Lines that
    /// are not JSON objects with an integer `step` (a line cut short by a crash) are dropped too.
    /// The new content replaces the old by a rename, so a crash here leaves one or the other.
    /// Returns the number of lines dropped; a missing file drops nothing.
    @discardableResult
    static func dropLines(after resumeStep: Int, in url: URL) throws -> Int {
        guard FileManager.default.fileExists(atPath: url.path) else { return 0 }
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            throw LoggingError.cannotRewrite(path: url.path, reason: FileProblem.cause(of: error, path: url.path))
        }
        var kept = Data()
        var dropped = 0
        let decoder = JSONDecoder()
        var lineStart = data.startIndex
        while lineStart < data.endIndex {
            guard let newline = data[lineStart...].firstIndex(of: UInt8(ascii: "\n")) else {
                dropped += 1  // unfinished last line
                break
            }
            let line = data[lineStart..<newline]
            lineStart = data.index(after: newline)
            if line.allSatisfy({ $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\r") }) { continue }
            if let parsed = try? decoder.decode(StepField.self, from: Data(line)), parsed.step <= resumeStep {
                kept.append(line)
                kept.append(UInt8(ascii: "\n"))
            } else {
                dropped += 1
            }
        }
        guard dropped > 0 else { return 0 }
        let temporary = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).resume-tmp")
        do {
            try kept.write(to: temporary)
            guard rename(temporary.path, url.path) == 0 else {
                throw LoggingError.cannotRewrite(path: url.path, reason: String(cString: strerror(errno)))
            }
        } catch let error as LoggingError {
            throw error
        } catch {
            throw LoggingError.cannotRewrite(path: url.path, reason: FileProblem.cause(of: error, path: url.path))
        }
        return dropped
    }
}

// MARK: - JSON lines

/// Builds one JSON object on one line, keys in the order added.
struct JSONLineBuilder {
    private var text = "{"
    private var empty = true

    mutating func add(_ key: String, _ value: Int) {
        addKey(key)
        text += String(value)
    }

    mutating func add(_ key: String, _ value: Double) {
        addKey(key)
        text += JSONLineBuilder.number(value)
    }

    mutating func add(_ key: String, string value: String) {
        addKey(key)
        text += JSONLineBuilder.quoted(value)
    }

    /// The object and its terminating newline.
    func finished() -> String { text + "}\n" }

    private mutating func addKey(_ key: String) {
        if !empty { text += "," }
        empty = false
        text += JSONLineBuilder.quoted(key) + ":"
    }

    /// Shortest text that reads back as the same `Double`; whole numbers below 1e15 without a
    /// fraction (`1120`, not `1120.0`); `null` for NaN and infinities, which JSON cannot express.
    static func number(_ value: Double) -> String {
        guard value.isFinite else { return "null" }
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return value.description  // e.g. "2.1345", "0.00029", "1e-05": all valid JSON numbers
    }

    /// A JSON string literal: quotes, backslashes and control characters escaped.
    static func quoted(_ string: String) -> String {
        var out = "\""
        for scalar in string.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}
