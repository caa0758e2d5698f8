import Foundation

/// How far `actual` is from `expected`, reported as numbers rather than a bare boolean.
public struct Comparison: CustomStringConvertible, Sendable {
    public let label: String
    /// Largest |actual - expected|.
    public let maxAbs: Double
    /// `maxAbs` divided by the largest |expected| (the reference tensor's scale).
    public let maxRelToScale: Double
    /// Largest |actual - expected| / max(|expected|, 1e-12) over elements.
    public let maxRelElement: Double
    /// Index of the element with the largest absolute difference.
    public let worstIndex: Int
    public let count: Int
    public let shapeMatches: Bool

    public var description: String {
        guard shapeMatches else { return "\(label): size mismatch (actual \(count) elements)" }
        return String(format: "%@: max abs %.3e, max abs / max|ref| %.3e, max elementwise rel %.3e at index %d of %d",
                      label, maxAbs, maxRelToScale, maxRelElement, worstIndex, count)
    }
}

/// Compares two float sequences element by element.
public func compare(_ actual: [Float], _ expected: [Float], label: String) -> Comparison {
    guard actual.count == expected.count else {
        return Comparison(label: label, maxAbs: .infinity, maxRelToScale: .infinity, maxRelElement: .infinity,
                          worstIndex: -1, count: actual.count, shapeMatches: false)
    }
    var maxAbs = 0.0, scale = 0.0, maxRel = 0.0, worst = 0
    for i in 0..<actual.count {
        let a = Double(actual[i]), e = Double(expected[i])
        let d = abs(a - e)
        if d > maxAbs || d.isNaN { maxAbs = d.isNaN ? .infinity : d; worst = i }
        scale = max(scale, abs(e))
        maxRel = max(maxRel, d / max(abs(e), 1e-12))
    }
    return Comparison(label: label, maxAbs: maxAbs, maxRelToScale: maxAbs / max(scale, 1e-30),
                      maxRelElement: maxRel, worstIndex: worst, count: actual.count, shapeMatches: true)
}

/// Locations of the shared reference fixtures and the cached demo model.
public enum Fixtures {
    /// The package root (derived from this source file's path).
    public static let packageRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// `../shared/reference` beside the repository, or `$DTRAIN_REFERENCE`.
    public static var referenceDir: URL {
        if let env = ProcessInfo.processInfo.environment["DTRAIN_REFERENCE"] { return URL(fileURLWithPath: env) }
        return packageRoot.deletingLastPathComponent().appendingPathComponent("shared/reference")
    }

    /// Path of the SmolLM2 GGUF, fetched through `launch/fetch-model.sh` when not cached yet.
    /// Throws if it cannot be fetched: tests that need the model fail loudly instead of skipping.
    public static func smolLM2Path() throws -> String {
        if let env = ProcessInfo.processInfo.environment["DTRAIN_MODEL"], FileManager.default.fileExists(atPath: env) {
            return env
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [packageRoot.appendingPathComponent("launch/fetch-model.sh").path]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let path = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard process.terminationStatus == 0, FileManager.default.fileExists(atPath: path) else {
            throw FixtureError(message: "launch/fetch-model.sh failed (status \(process.terminationStatus)); the SmolLM2 tests need the model")
        }
        return path
    }
}

public struct FixtureError: Error, CustomStringConvertible {
    public let message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}
