import Foundation
import Yams

/// A config problem, naming the key (dotted path) and what was expected.
public enum ConfigError: Error, CustomStringConvertible, Equatable {
    case unreadable(file: String, reason: String)
    case syntax(file: String, reason: String)
    case unknownKey(key: String, known: [String])
    case wrongType(key: String, expected: String)
    case missing(key: String, expected: String)
    case invalid(key: String, message: String)
    case badOverride(String, reason: String)

    public var description: String {
        switch self {
        case .unreadable(let f, let r): return "\(f): cannot read the config (\(r))"
        case .syntax(let f, let r): return "\(f): not valid YAML: \(r)"
        case .unknownKey(let k, let known):
            let near = known.min { editDistance($0, lastComponent(k)) < editDistance($1, lastComponent(k)) }
            let hint = near.map { editDistance($0, lastComponent(k)) <= 3 ? " HINT: did you mean '\($0)'?" : "" } ?? ""
            return "config key '\(k)' is not known; expected one of: \(known.joined(separator: ", ")).\(hint)"
        case .wrongType(let k, let e): return "config key '\(k)': expected \(e)"
        case .missing(let k, let e): return "config key '\(k)' is required: \(e)"
        case .invalid(let k, let m): return "config key '\(k)': \(m)"
        case .badOverride(let o, let r): return "--set \(o): \(r). HINT: write --set section.key=value, e.g. --set optim.lr=1e-4"
        }
    }
}

/// A config path with a leading `~` or `~/` taken as the user's home directory ($HOME), as a
/// shell would; YAML values never pass through one.
func expandingTilde(_ path: String) -> String {
    guard path == "~" || path.hasPrefix("~/"), let home = ProcessInfo.processInfo.environment["HOME"], !home.isEmpty else { return path }
    return home + path.dropFirst()
}

func lastComponent(_ key: String) -> String { key.split(separator: ".").last.map(String.init) ?? key }

/// Levenshtein distance, for "did you mean" hints.
func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    var prev = Array(0...b.count)
    for i in 1...max(a.count, 1) where !a.isEmpty {
        var cur = [i] + [Int](repeating: 0, count: b.count)
        for j in 1...max(b.count, 1) where !b.isEmpty {
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        prev = cur
    }
    return a.isEmpty ? b.count : prev[b.count]
}

/// A coding key for any string, to list every key a mapping holds.
struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

extension Decoder {
    /// Dotted path of this decoder's position (`lora.r`).
    var dottedPath: String { codingPath.map(\.stringValue).joined(separator: ".") }

    /// Throws `unknownKey` for the first key of this mapping that is not in `known`.
    func rejectUnknownKeys<K: CodingKey & CaseIterable>(_ keys: K.Type) throws {
        let known = keys.allCases.map(\.stringValue)
        let container = try self.container(keyedBy: AnyKey.self)
        for key in container.allKeys where !known.contains(key.stringValue) {
            let path = (codingPath.map(\.stringValue) + [key.stringValue]).joined(separator: ".")
            throw ConfigError.unknownKey(key: path, known: known)
        }
    }
}

extension KeyedDecodingContainer {
    /// The value at `key`, or `fallback` when absent or null; a wrong type or a non-finite number
    /// names the key.
    func value<T: Decodable>(_ key: Key, or fallback: T, _ expected: String) throws -> T {
        let value: T
        do { value = try decodeIfPresent(T.self, forKey: key) ?? fallback } catch let e as ConfigError { throw e } catch {
            throw ConfigError.wrongType(key: dotted(key), expected: expected)
        }
        try requireFinite(value, key)
        return value
    }

    /// An optional value; a wrong type or a non-finite number names the key.
    func optional<T: Decodable>(_ key: Key, _ expected: String) throws -> T? {
        let value: T?
        do { value = try decodeIfPresent(T.self, forKey: key) } catch let e as ConfigError { throw e } catch {
            throw ConfigError.wrongType(key: dotted(key), expected: expected)
        }
        if let value { try requireFinite(value, key) }
        return value
    }

    private func dotted(_ key: Key) -> String { (codingPath.map(\.stringValue) + [key.stringValue]).joined(separator: ".") }

    /// YAML reads `nan`, `.inf` and `1e39` (too large for a Float) as numbers; none is a setting
    /// any key means, and a NaN learning rate would train a NaN model without a word.
    private func requireFinite<T>(_ value: T, _ key: Key) throws {
        let bad: String?
        switch value {
        case let f as Float: bad = f.isFinite ? nil : "\(f)"
        case let d as Double: bad = d.isFinite ? nil : "\(d)"
        case let list as [Float]: bad = list.allSatisfy(\.isFinite) ? nil : "\(list)"
        case let list as [Double]: bad = list.allSatisfy(\.isFinite) ? nil : "\(list)"
        default: bad = nil
        }
        if let bad { throw ConfigError.invalid(key: dotted(key), message: "must be a finite number, got \(bad)") }
    }

    /// One string or a list of strings.
    func stringList(_ key: Key) throws -> [String]? {
        if let one = try? decodeIfPresent(String.self, forKey: key) { return [one] }
        return try optional(key, "a path or a list of paths")
    }
}

/// Reads YAML, applies `--set` overrides and decodes a `Decodable` config.
public enum ConfigLoader {
    /// Parses `text` (named `file` in errors), applies each `key.path=value` override, decodes.
    public static func decode<T: Decodable>(_ type: T.Type, yaml text: String, file: String, overrides: [String]) throws -> T {
        var root: Node
        do { root = try Yams.compose(yaml: text) ?? Node.mapping(Node.Mapping([])) } catch {
            throw ConfigError.syntax(file: file, reason: "\(error)")
        }
        for override in overrides {
            guard let eq = override.firstIndex(of: "=") else { throw ConfigError.badOverride(override, reason: "no '='") }
            let path = override[..<eq].split(separator: ".").map(String.init)
            guard !path.isEmpty, !path.contains(where: \.isEmpty) else { throw ConfigError.badOverride(override, reason: "empty key") }
            let valueText = String(override[override.index(after: eq)...])
            let value: Node
            do { value = try Yams.compose(yaml: valueText) ?? Node("", .implicit) } catch {
                throw ConfigError.badOverride(override, reason: "value is not YAML")
            }
            root = try set(root, path[...], value, override)
        }
        do {
            return try YAMLDecoder().decode(T.self, from: root)
        } catch let e as ConfigError {
            throw e
        } catch let DecodingError.typeMismatch(_, ctx) {
            throw ConfigError.wrongType(key: ctx.codingPath.map(\.stringValue).joined(separator: "."), expected: ctx.debugDescription)
        } catch let DecodingError.keyNotFound(key, ctx) {
            throw ConfigError.missing(key: (ctx.codingPath + [key]).map(\.stringValue).joined(separator: "."), expected: "no default")
        } catch let DecodingError.dataCorrupted(ctx) {
            throw ConfigError.wrongType(key: ctx.codingPath.map(\.stringValue).joined(separator: "."), expected: ctx.debugDescription)
        }
    }

    private static func set(_ node: Node, _ path: ArraySlice<String>, _ value: Node, _ override: String) throws -> Node {
        guard let head = path.first else { return value }
        var mapping: Node.Mapping
        switch node {
        case .mapping(let m): mapping = m
        case .scalar(let s) where s.string.isEmpty || s.string == "null" || s.string == "~": mapping = Node.Mapping([])
        default: throw ConfigError.badOverride(override, reason: "'\(head)' is under a value that is not a section")
        }
        let child = mapping[head] ?? Node.mapping(Node.Mapping([]))
        mapping[head] = try set(child, path.dropFirst(), value, override)
        return .mapping(mapping)
    }
}
