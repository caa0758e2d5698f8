import DTrainData
import DTrainTrainer
import DTrainCore
import Foundation

/// `dtrain data split`: train / val / test files by a seeded hash of each record's content.
extension DataCommand.Split {
    /// Splits the records of `paths` into `outDir`/train.jsonl, val.jsonl and test.jsonl (each
    /// line copied byte for byte) and prints the counts. Returns false when records were invalid
    /// (skipped under `on_error: skip`; otherwise the first one is thrown).
    func split(settings: DataSettings) throws -> Bool {
        let paths = files, valFraction = val, testFraction = test, outDir = out
        let options = try settings.resolve()
        let splitter = try DataSplitter(valFraction: valFraction, testFraction: testFraction, seed: seed)
        do {
            try FileManager.default.createDirectory(atPath: outDir, withIntermediateDirectories: true)
        } catch {
            throw DataFileError.cannotWrite(file: outDir, reason: FileProblem.cause(of: error, path: outDir, wantDirectory: true))
        }
        var writers = [SplitPart: DataLineWriter]()
        for part in SplitPart.allCases {
            let path = (outDir as NSString).appendingPathComponent("\(part.rawValue).jsonl")
            try checkNotAnInput(path, inputs: paths)
            writers[part] = try DataLineWriter(path: path)
        }
        var counts = [SplitPart: Int]()
        var report = DataReport()
        for path in paths {
            var reader = try DataRecordReader(path: path, options: options.reader)
            try reader.forEachRecord { line, result in
                switch result {
                case .success(let record):
                    let part = splitter.part(of: record)
                    counts[part, default: 0] += 1
                    writers[part]!.write(line.bytes)
                case .failure(let error):
                    if options.onError == .fail { throw error }
                    report.addInvalid(error)
                }
            }
        }
        for part in SplitPart.allCases { try writers[part]!.close() }
        let total = counts.values.reduce(0, +)
        print("split: \(total) records -> " + SplitPart.allCases.map { part in
            let n = counts[part] ?? 0
            return "\(part.rawValue) \(n) (" + String(format: "%.1f%%", total > 0 ? Double(n) * 100 / Double(total) : 0) + ")"
        }.joined(separator: ", ") + " in \(outDir)")
        printInvalid(report)
        return report.invalidCount == 0
    }
}

/// `dtrain data dedup`: drops exact and near-duplicate records, keeping the first of each group.
extension DataCommand.Dedup {
    /// Writes the records of `paths` that repeat no earlier record to `out` (lines copied byte
    /// for byte) and prints what was removed. Returns false when records were invalid (skipped
    /// under `on_error: skip`; otherwise the first one is thrown).
    func dedup(settings: DataSettings, shown: Int = 10) throws -> Bool {
        let paths = files, nearOptions = NearDuplicateOptions(threshold: threshold), findNear = !exactOnly
        let options = try settings.resolve()
        let dedup = Deduplicator(options: nearOptions, findNear: findNear)
        try checkNotAnInput(out, inputs: paths)
        let writer = try DataLineWriter(path: out)
        var locations = [RecordLocation]()
        var firstLines = [String]()
        var kept = 0, exact = 0, near = 0
        var removed = [String]()
        var report = DataReport()
        for path in paths {
            var reader = try DataRecordReader(path: path, options: options.reader)
            try reader.forEachRecord { line, result in
                let record: DataRecord
                switch result {
                case .success(let r): record = r
                case .failure(let error):
                    if options.onError == .fail { throw error }
                    report.addInvalid(error)
                    return
                }
                let location = RecordLocation(file: path, line: line.number)
                let id = locations.count
                locations.append(location)
                firstLines.append(removed.count < shown ? Self.snippet(line.bytes) : "")
                switch dedup.check(id: id, record: record) {
                case .unique:
                    kept += 1
                    writer.write(line.bytes)
                case .exact(let of):
                    exact += 1
                    if removed.count < shown {
                        removed.append("  \(location) (exact) repeats \(locations[of]): \(Self.snippet(line.bytes))")
                    }
                case .near(let of, let j):
                    near += 1
                    if removed.count < shown {
                        removed.append("  \(location) " + String(format: "(near, Jaccard %.2f)", j)
                                       + " repeats \(locations[of]): \(Self.snippet(line.bytes))\n      kept: \(firstLines[of])")
                    }
                }
            }
        }
        try writer.close()
        print("dedup: \(locations.count) records: kept \(kept), removed \(exact) exact and \(near) near duplicates "
              + String(format: "(%d-word shingles, %d MinHash functions in %d bands, Jaccard >= %.2f) -> %@",
                       nearOptions.shingleWords, nearOptions.permutations, nearOptions.bands, nearOptions.threshold, out))
        if !removed.isEmpty {
            print("first removed:")
            removed.forEach { print($0) }
        }
        printInvalid(report)
        return report.invalidCount == 0
    }

    private static func snippet(_ bytes: UnsafeRawBufferPointer, limit: Int = 100) -> String {
        let s = String(decoding: bytes.prefix(limit * 4), as: UTF8.self)
        return s.count > limit ? String(s.prefix(limit)) + "…" : s
    }
}

/// Prints skipped records' count and the first few.
func printInvalid(_ report: DataReport, shown: Int = 20) {
    guard report.invalidCount > 0 else { return }
    let kinds = report.invalidByKind.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
    print("skipped \(report.invalidCount) invalid record\(report.invalidCount == 1 ? "" : "s") (\(kinds)):")
    for e in report.invalidSamples.prefix(shown) { print("  \(e)") }
}

/// Writes lines to a file through a buffer.
final class DataLineWriter {
    private let handle: FileHandle
    private let path: String
    private var buffer = [UInt8]()

    init(path: String) throws {
        self.path = path
        guard FileManager.default.createFile(atPath: path, contents: nil), let h = FileHandle(forWritingAtPath: path) else {
            throw DataFileError.cannotWrite(file: path, reason: String(cString: strerror(errno)))
        }
        handle = h
    }

    func write(_ line: UnsafeRawBufferPointer) {
        buffer.append(contentsOf: line)
        buffer.append(0x0A)
        if buffer.count > 1 << 22 { try? flush() }
    }

    private func flush() throws {
        guard !buffer.isEmpty else { return }
        do { try handle.write(contentsOf: buffer) } catch {
            throw DataFileError.cannotWrite(file: path, reason: FileProblem.cause(of: error, path: path))
        }
        buffer.removeAll(keepingCapacity: true)
    }

    func close() throws {
        try flush()
        try? handle.close()
    }
}
