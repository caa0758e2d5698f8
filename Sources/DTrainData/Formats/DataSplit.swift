// `dtrain data split` and `dtrain data render`'s pure parts: the seeded split of a record, and
// the JSON line a rendered record is written as.

import Foundation

/// Which part of a split a record goes to.
public enum SplitPart: String, Sendable, CaseIterable {
    case train, val, test
}

/// Assigns records to train / val / test by a seeded hash of their content.
///
/// The hash is of `DataRecord.canonicalBytes` (format, roles and field values; not key order,
/// spacing or column names), so a record lands in the same part whatever its position in the
/// file or the order of the file, and exact duplicates land together (no train/test leakage
/// through copies). Fractions hold in expectation, not exactly.
public struct DataSplitter: Sendable {
    public let valFraction: Double
    public let testFraction: Double
    public let seed: UInt64

    /// - Precondition: both fractions in [0, 1] with a sum of at most 1.
    public init(valFraction: Double, testFraction: Double, seed: UInt64) throws {
        guard (0...1).contains(valFraction), (0...1).contains(testFraction), valFraction + testFraction <= 1 else {
            throw DataSplitError.badFractions(val: valFraction, test: testFraction)
        }
        self.valFraction = valFraction
        self.testFraction = testFraction
        self.seed = seed
    }

    /// The part `record` goes to: u = hash(record, seed) in [0, 1); test below `testFraction`,
    /// val below `testFraction + valFraction`, train above.
    public func part(of record: DataRecord) -> SplitPart {
        let u = ContentHash.unitInterval(record.canonicalBytes, seed: seed)
        if u < testFraction { return .test }
        if u < testFraction + valFraction { return .val }
        return .train
    }
}

public enum DataSplitError: Error, CustomStringConvertible {
    case badFractions(val: Double, test: Double)

    public var description: String {
        switch self {
        case .badFractions(let v, let t):
            return "--val \(v) --test \(t): each must be in [0, 1] and their sum at most 1 (e.g. --val 0.05 --test 0.05)"
        }
    }
}

/// JSON text written by hand (key order fixed, no JSONSerialization on long id arrays).
public enum JSONText {
    /// `s` as a JSON string literal, quotes included (non-ASCII kept as UTF-8, as `ensure_ascii=False`).
    public static func quote(_ s: String) -> String {
        var out = [UInt8]()
        out.reserveCapacity(s.utf8.count + 2)
        out.append(0x22)
        for b in s.utf8 {
            switch b {
            case 0x22: out.append(0x5C); out.append(0x22)
            case 0x5C: out.append(0x5C); out.append(0x5C)
            case 0x0A: out.append(0x5C); out.append(UInt8(ascii: "n"))
            case 0x0D: out.append(0x5C); out.append(UInt8(ascii: "r"))
            case 0x09: out.append(0x5C); out.append(UInt8(ascii: "t"))
            case 0x08: out.append(0x5C); out.append(UInt8(ascii: "b"))
            case 0x0C: out.append(0x5C); out.append(UInt8(ascii: "f"))
            case 0..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                out.append(contentsOf: Array("\\u00".utf8))
                out.append(hex[Int(b >> 4)])
                out.append(hex[Int(b & 15)])
            default: out.append(b)
            }
        }
        out.append(0x22)
        return String(decoding: out, as: UTF8.self)
    }

    /// One `dtrain data render` line: `{"text": ..., "ids": [...], "loss_mask": [...]}`, the mask
    /// omitted when `includeMask` is false.
    public static func renderLine(_ example: TokenizedExample, includeMask: Bool) -> String {
        var out = "{\"text\":" + quote(example.text) + ",\"ids\":["
        out += example.ids.map(String.init).joined(separator: ",")
        out += "]"
        if includeMask {
            out += ",\"loss_mask\":["
            out += example.lossMask.map { $0 == 0 ? "0" : "1" }.joined(separator: ",")
            out += "]"
        }
        return out + "}"
    }

    /// `{"error": message}`.
    public static func errorLine(_ message: String) -> String {
        "{\"error\":" + quote(message) + "}"
    }
}
