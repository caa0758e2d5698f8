// Rank 0's console output during training: one fixed-format line per step, redrawn in place under
// a progress bar on a terminal, printed line by line when stdout is a file or a pipe.
import Foundation

/// A compact duration: `45s` under a minute, `12m` under an hour, `1h05m` beyond, each rounded
/// to its last unit; `?` for NaN or infinity (an ETA before the first step is timed). Negative
/// durations read as `0s`.
public func formatDuration(_ seconds: Double) -> String {
    guard seconds.isFinite else { return "?" }
    let clamped = max(seconds, 0)
    if clamped.rounded() < 60 { return "\(Int(clamped.rounded()))s" }
    let minutes = Int((clamped / 60).rounded())
    if minutes < 60 { return "\(minutes)m" }
    let remainder = minutes % 60
    return "\(minutes / 60)h" + (remainder < 10 ? "0" : "") + "\(remainder)m"
}

/// One training step as rank 0 prints it:
///
///     step 120/2000 | loss 2.1345 | lr 2.9e-04 | norm 0.81 | 913 ms | 1120 tok/s | eta 12m
///
/// followed by `| elapsed 1h05m` when `elapsedSeconds` is set.
public struct ProgressLine: CustomStringConvertible, Equatable, Sendable {
    /// This step's number (1-based: the last step equals `totalSteps`).
    public var step: Int
    public var totalSteps: Int
    public var loss: Double
    public var learningRate: Double
    /// Gradient L2 norm (before clipping).
    public var gradNorm: Double
    /// Wall time of this step.
    public var stepSeconds: Double
    public var tokensPerSecond: Double
    /// Estimated time to the last step; see `estimatedRemaining`.
    public var etaSeconds: Double
    /// Time since training started; appended to the line when set.
    public var elapsedSeconds: Double?

    public init(step: Int, totalSteps: Int, loss: Double, learningRate: Double, gradNorm: Double,
                stepSeconds: Double, tokensPerSecond: Double, etaSeconds: Double, elapsedSeconds: Double? = nil) {
        self.step = step
        self.totalSteps = totalSteps
        self.loss = loss
        self.learningRate = learningRate
        self.gradNorm = gradNorm
        self.stepSeconds = stepSeconds
        self.tokensPerSecond = tokensPerSecond
        self.etaSeconds = etaSeconds
        self.elapsedSeconds = elapsedSeconds
    }

    /// The remaining time if the steps still to run take as long on average as the
    /// `stepsTimed` steps that took `secondsTimed` (time steps after warm-up for a steadier
    /// estimate); infinity before any step is timed.
    public static func estimatedRemaining(stepsLeft: Int, stepsTimed: Int, secondsTimed: Double) -> Double {
        guard stepsTimed > 0 else { return .infinity }
        return Double(max(stepsLeft, 0)) * secondsTimed / Double(stepsTimed)
    }

    /// Fraction of the run done, in 0...1.
    public var fractionDone: Double {
        totalSteps > 0 ? min(max(Double(step) / Double(totalSteps), 0), 1) : 0
    }

    /// The step line, without a newline.
    public var description: String {
        var line = "step \(step)/\(totalSteps)"
        line += " | loss " + String(format: "%.4f", loss)
        line += " | lr " + String(format: "%.1e", learningRate)
        line += " | norm " + String(format: "%.2f", gradNorm)
        line += " | " + String(format: "%.0f", stepSeconds * 1000) + " ms"
        line += " | " + String(format: "%.0f", tokensPerSecond) + " tok/s"
        line += " | eta " + formatDuration(etaSeconds)
        if let elapsedSeconds { line += " | elapsed " + formatDuration(elapsedSeconds) }
        return line
    }
}

/// Prints progress lines. On a terminal the current step is one line redrawn in place
/// (`\r`, a bar, the step line, then erase-to-end-of-line); elsewhere (a batch job's log file)
/// each step is a plain line. Call `finish()` once training ends to close the redrawn line.
public final class ConsoleReporter {
    /// Whether lines are redrawn in place.
    public let isTerminal: Bool
    /// Characters between the bar's brackets.
    public var barWidth = 20

    private let write: (String) -> Void
    private let columns: () -> Int?
    private var lastLine: String?

    /// Reports on standard output, redrawing in place if it is a terminal (`isatty(1)`).
    public convenience init() {
        self.init(isTerminal: isatty(1) != 0, columns: ConsoleReporter.terminalColumns) { text in
            fputs(text, stdout)
            fflush(stdout)
        }
    }

    /// Reports through `write`; `columns` gives the terminal width, if known, so a redrawn line
    /// never wraps (a wrapped line cannot be redrawn with `\r`).
    public init(isTerminal: Bool, columns: @escaping () -> Int? = { nil }, write: @escaping (String) -> Void) {
        self.isTerminal = isTerminal
        self.columns = columns
        self.write = write
    }

    /// Shows one step.
    public func report(_ line: ProgressLine) {
        guard isTerminal else {
            write(line.description + "\n")
            return
        }
        let text = fitted(bar(line.fractionDone) + " " + line.description, fallback: line.description)
        lastLine = text
        write("\r" + text + ConsoleReporter.eraseToEndOfLine)
    }

    /// Prints a line that stays (a validation result, a warning), keeping the progress line below it.
    public func message(_ text: String) {
        guard isTerminal, let lastLine else {
            write(text + "\n")
            return
        }
        write("\r" + ConsoleReporter.eraseToEndOfLine + text + "\n" + "\r" + lastLine + ConsoleReporter.eraseToEndOfLine)
    }

    /// Ends the redrawn line with a newline (nothing to do off a terminal). Safe to call twice.
    public func finish() {
        if isTerminal, lastLine != nil { write("\n") }
        lastLine = nil
    }

    /// `[#########...........]` for `fraction` of `barWidth`.
    func bar(_ fraction: Double) -> String {
        let filled = min(max(Int((fraction * Double(barWidth)).rounded(.down)), 0), barWidth)
        return "[" + String(repeating: "#", count: filled) + String(repeating: ".", count: barWidth - filled) + "]"
    }

    /// `preferred` if it fits the terminal, else `fallback`, cut to the width if still too long.
    private func fitted(_ preferred: String, fallback: String) -> String {
        guard let width = columns(), width > 1 else { return preferred }
        if preferred.count < width { return preferred }
        return fallback.count < width ? fallback : String(fallback.prefix(width - 1))
    }

    private static let eraseToEndOfLine = "\u{1B}[K"

    /// Width of the terminal on standard output, if it is one.
    static func terminalColumns() -> Int? {
        #if os(Linux)
        var size = winsize()
        let status = withUnsafeMutablePointer(to: &size) { ioctl(1, UInt(TIOCGWINSZ), $0) }
        return status == 0 && size.ws_col > 0 ? Int(size.ws_col) : nil
        #else
        return nil
        #endif
    }
}
