import DTrainDistributed
import Foundation

/// Where a run reports: rank 0's console (a redrawn progress line on a terminal, plain lines
/// under an MPI launcher, whose pty is not the user's terminal), `metrics.jsonl` and TensorBoard.
/// On every other rank each call does nothing.
final class RunLog {
    let isRoot: Bool
    private let console = World.launchedByMPI
        ? ConsoleReporter(isTerminal: false) { fputs($0, stdout); fflush(stdout) } : ConsoleReporter()
    private var metrics: MetricsLog?
    private var tensorBoard: TensorBoardWriter?

    init(isRoot: Bool) { self.isRoot = isRoot }

    /// A line that stays on the console.
    func say(_ text: String) { if isRoot { console.message(text) } }

    /// Opens metrics.jsonl (and the TensorBoard events) in `directory`: fresh, or continuing
    /// after `resumedStep` (later lines, from a run that went further, are dropped).
    func open(directory: URL, tensorboard: Bool, resumedStep: Int?) throws {
        guard isRoot else { return }
        if tensorboard { tensorBoard = try TensorBoardWriter(directory: directory) }
        metrics = try MetricsLog(directory: directory, mode: resumedStep.map { .append(resumeStep: $0) } ?? .fresh,
                                 tensorBoard: tensorBoard)
    }

    /// One optimizer step: a metrics line always, a console line every `everySteps` and at the end.
    func step(_ line: ProgressLine, tokens: Int, epoch: Int, everySteps: Int) {
        metrics?.step(step: line.step, loss: line.loss, lr: line.learningRate, gradNorm: line.gradNorm,
                      tokensPerSecond: line.tokensPerSecond,
                      extra: ["tokens": Double(tokens), "elapsed_s": line.elapsedSeconds ?? 0, "epoch": Double(epoch)])
        if isRoot && (line.step % max(1, everySteps) == 0 || line.step == line.totalSteps) { console.report(line) }
    }

    /// A validation result; `note` follows the numbers on the console (best so far, ...).
    func validation(step: Int, loss: Double, tasks: [String: Double]? = nil, note: String = "") {
        metrics?.validation(step: step, valLoss: loss, valPerplexity: exp(loss), tasks: tasks ?? [:])
        let shown = (tasks ?? [:]).sorted { $0.key < $1.key }.map { String(format: " | %@ %.2f", $0.key, $0.value) }.joined()
        say(String(format: "validation at step %d: loss %.4f | ppl %.3f", step, loss, exp(loss)) + shown + note)
    }

    /// Ends the progress line (before the summary).
    func finishProgress() { if isRoot { console.finish() } }

    func close() {
        metrics?.close()
        tensorBoard?.close()
    }
}
