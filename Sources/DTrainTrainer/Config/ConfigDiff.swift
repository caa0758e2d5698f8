import Foundation
import Yams

/// Differences between two effective configs (as YAML), key by dotted key: what a resumed run
/// changed relative to the run that wrote its checkpoint.
public enum ConfigDiff {
    /// One changed key with its old and new value as written in YAML (`-` when absent).
    public struct Change: Equatable, CustomStringConvertible {
        public let key: String, old: String, new: String
        public var description: String { "\(key): \(old) -> \(new)" }
    }

    public static func changes(from old: String, to new: String) -> [Change] {
        let a = flatten(old), b = flatten(new)
        return Set(a.keys).union(b.keys).sorted().compactMap { key in
            a[key] == b[key] ? nil : Change(key: key, old: a[key] ?? "-", new: b[key] ?? "-")
        }
    }

    /// Dotted key -> scalar text; sequences become `[a, b]`.
    static func flatten(_ yaml: String) -> [String: String] {
        guard let node = try? Yams.compose(yaml: yaml) else { return [:] }
        var out: [String: String] = [:]
        func walk(_ node: Node, _ prefix: String) {
            switch node {
            case .mapping(let m):
                for (k, v) in m { walk(v, prefix.isEmpty ? (k.string ?? "?") : prefix + "." + (k.string ?? "?")) }
            case .sequence(let s):
                out[prefix] = "[" + s.map { $0.string ?? "…" }.joined(separator: ", ") + "]"
            default:
                out[prefix] = node.string ?? ""
            }
        }
        walk(node, "")
        return out
    }
}
