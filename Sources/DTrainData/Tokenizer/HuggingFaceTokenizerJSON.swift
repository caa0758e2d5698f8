// Reading a Hugging Face `tokenizer.json` (the `tokenizers` library's serialization) into a
// BPETokenizer. Only byte-level BPE is accepted: model.type "BPE", a ByteLevel pre-tokenizer, and a
// split that is one of PreTokenizerKind's regexes.
//
// Layout read here:
//   model.vocab {token: id}, model.merges ["a b", ...] or [["a", "b"], ...], model.ignore_merges
//   added_tokens [{id, content, special}]: matched verbatim in the input (all of them, as
//       tokenizers does), decoded verbatim
//   normalizer: null or NFC
//   pre_tokenizer: ByteLevel(use_regex) | Sequence[Digits(individual_digits)?, Split(Regex)?, ByteLevel]
//   post_processor: TemplateProcessing (or a Sequence holding one) that puts a special token
//       before or after $A: that is BOS / EOS, added with add_special_tokens
// tokenizer_config.json, when given, decides add_bos_token, add_eos_token, bos_token, eos_token.

import Foundation

extension BPETokenizer {
    /// Builds a tokenizer from a Hugging Face `tokenizer.json`, and optionally the model's
    /// `tokenizer_config.json` (for `add_bos_token`, `add_eos_token`, `bos_token`, `eos_token`).
    ///
    /// - Throws: `TokenizerError` for malformed JSON, a model that is not byte-level BPE, or a
    ///   pre-tokenizer or normalizer this tokenizer does not implement.
    public static func fromHuggingFaceJSON(_ data: Data, config: Data? = nil) throws -> BPETokenizer {
        let root = try jsonObject(data, what: "tokenizer.json")
        guard let model = root["model"] as? [String: Any] else {
            throw TokenizerError.invalidJSON(path: "model", problem: "missing or not an object")
        }
        if let type = model["type"] as? String, type != "BPE" {
            throw TokenizerError.unsupportedModel(found: "\"\(type)\"")
        }
        for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if let value = model[key] as? String, !value.isEmpty {
                throw TokenizerError.unsupportedModel(found: "BPE with \(key) \"\(value)\"")
            }
        }
        guard let vocab = model["vocab"] as? [String: Any] else {
            throw TokenizerError.invalidJSON(path: "model.vocab", problem: "missing or not an object of token: id")
        }
        guard let rawMerges = model["merges"] as? [Any] else {
            throw TokenizerError.invalidJSON(path: "model.merges", problem: "missing or not an array")
        }

        // Tokens by id: the vocabulary, then the added tokens (which may lie beyond it).
        var entries = [(id: Int, token: String, type: Int)]()
        entries.reserveCapacity(vocab.count)
        for (token, value) in vocab {
            guard let id = intValue(value), id >= 0 else {
                throw TokenizerError.invalidJSON(path: "model.vocab[\"\(token)\"]", problem: "id is not a non-negative integer")
            }
            entries.append((id, token, 1))
        }
        for (i, item) in ((root["added_tokens"] as? [Any]) ?? []).enumerated() {
            guard let added = item as? [String: Any], let id = added["id"].flatMap(intValue), id >= 0,
                  let content = added["content"] as? String else {
                throw TokenizerError.invalidJSON(path: "added_tokens[\(i)]", problem: "expected {id, content, special}")
            }
            entries.append((id, content, (added["special"] as? Bool ?? false) ? 3 : 4))
        }
        let count = (entries.map(\.id).max() ?? -1) + 1
        var tokens = [String](repeating: "", count: count)
        var types = [Int](repeating: 5, count: count)   // 5: unused (ids no entry names)
        for e in entries where types[e.id] == 5 || e.type != 1 {
            tokens[e.id] = e.token
            types[e.id] = e.type
        }

        var merges = [String]()
        merges.reserveCapacity(rawMerges.count)
        for (i, rule) in rawMerges.enumerated() {
            if let s = rule as? String {
                merges.append(s)
            } else if let pair = rule as? [Any], pair.count == 2, let a = pair[0] as? String, let b = pair[1] as? String {
                merges.append(a + " " + b)
            } else {
                throw TokenizerError.invalidJSON(path: "model.merges[\(i)]", problem: "expected \"a b\" or [\"a\", \"b\"]")
            }
        }

        let normalizeNFC = try parseNormalizer(root["normalizer"])
        let kind = try parsePreTokenizer(root["pre_tokenizer"])
        let ignoreMerges = model["ignore_merges"] as? Bool ?? false

        // BOS / EOS: the post-processor's template, overridden by tokenizer_config.json.
        var idOf = [String: Int]()
        for (i, t) in tokens.enumerated() where idOf[t] == nil && !t.isEmpty { idOf[t] = i }
        let template = templateSpecialTokens(root["post_processor"])
        var bos = template.first.flatMap { idOf[$0] }
        var eos = template.last.flatMap { idOf[$0] }
        var addBOS = template.first != nil
        var addEOS = template.last != nil
        if let config {
            let cfg = try jsonObject(config, what: "tokenizer_config.json")
            if let name = specialTokenName(cfg["bos_token"]) {
                guard let id = idOf[name] else {
                    throw TokenizerError.invalidJSON(path: "tokenizer_config.json bos_token",
                                                     problem: "\"\(name)\" is not in the vocabulary")
                }
                bos = id
            }
            if let name = specialTokenName(cfg["eos_token"]) {
                guard let id = idOf[name] else {
                    throw TokenizerError.invalidJSON(path: "tokenizer_config.json eos_token",
                                                     problem: "\"\(name)\" is not in the vocabulary")
                }
                eos = id
            }
            if let flag = cfg["add_bos_token"] as? Bool { addBOS = flag }
            if let flag = cfg["add_eos_token"] as? Bool { addEOS = flag }
        }

        return BPETokenizer(tokens: tokens, merges: merges, tokenTypes: types, preTokenizer: kind,
                            bosTokenID: bos, eosTokenID: eos, addBOS: addBOS, addEOS: addEOS,
                            specialTokens: nil, ignoreMerges: ignoreMerges, normalizeNFC: normalizeNFC)
    }

    // MARK: - Pieces

    private static func jsonObject(_ data: Data, what: String) throws -> [String: Any] {
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: data)
        } catch {
            throw TokenizerError.invalidJSON(path: what, problem: "not valid JSON")
        }
        guard let dict = object as? [String: Any] else {
            throw TokenizerError.invalidJSON(path: what, problem: "top level is not an object")
        }
        return dict
    }

    private static func intValue(_ value: Any) -> Int? {
        if let i = value as? Int { return i }
        if let n = value as? NSNumber { return n.intValue }
        return nil
    }

    /// A config's special token: a string, or an AddedToken object with `content`.
    private static func specialTokenName(_ value: Any?) -> String? {
        if let s = value as? String { return s }
        if let d = value as? [String: Any] { return d["content"] as? String }
        return nil
    }

    /// Whether the normalizer asks for NFC; nil and empty sequences are no normalizer.
    private static func parseNormalizer(_ value: Any?) throws -> Bool {
        guard let n = value as? [String: Any] else { return false }
        switch n["type"] as? String {
        case "NFC":
            return true
        case "Sequence":
            let parts = (n["normalizers"] as? [Any]) ?? []
            var nfc = false
            for part in parts { nfc = try parseNormalizer(part) || nfc }
            return nfc
        default:
            throw TokenizerError.unsupportedNormalizer(found: describeJSON(n))
        }
    }

    /// One step of a pre-tokenizer sequence.
    private enum Step {
        case byteLevel(useRegex: Bool, addPrefixSpace: Bool)
        case individualDigits
        case split(pattern: String)
        case unsupported(String)
    }

    private static func steps(_ value: Any?) -> [Step] {
        guard let p = value as? [String: Any] else { return [] }
        switch p["type"] as? String {
        case "Sequence":
            return ((p["pretokenizers"] as? [Any]) ?? []).flatMap { steps($0) }
        case "ByteLevel":
            return [.byteLevel(useRegex: p["use_regex"] as? Bool ?? true,
                               addPrefixSpace: p["add_prefix_space"] as? Bool ?? false)]
        case "Digits":
            return [(p["individual_digits"] as? Bool ?? false) ? .individualDigits : .unsupported(describeJSON(p))]
        case "Split":
            let pattern = p["pattern"] as? [String: Any]
            guard let regex = pattern?["Regex"] as? String,
                  (p["behavior"] as? String ?? "Isolated") == "Isolated",
                  !(p["invert"] as? Bool ?? false) else {
                return [.unsupported(describeJSON(p))]
            }
            return [.split(pattern: regex)]
        default:
            return [.unsupported(describeJSON(p))]
        }
    }

    private static func parsePreTokenizer(_ value: Any?) throws -> PreTokenizerKind {
        let found = value.map(describeJSON) ?? "null"
        let all = steps(value)
        guard case .byteLevel(let useRegex, let addPrefixSpace)? = all.last, !addPrefixSpace else {
            throw TokenizerError.unsupportedPreTokenizer(found: found)
        }
        var rest = Array(all.dropLast())
        var digits = false
        if case .individualDigits? = rest.first {
            digits = true
            rest.removeFirst()
        }
        var kind: PreTokenizerKind?
        if useRegex {
            if rest.isEmpty { kind = .gpt2 }
        } else if rest.count == 1, case .split(let pattern) = rest[0] {
            kind = PreTokenizerKind.allCases.first { splitMatches(pattern, $0) }
        }
        switch (kind, digits) {
        case (.gpt2?, false): return .gpt2
        case (.gpt2?, true), (.smollm?, false): return .smollm
        case (.llama3?, false): return .llama3
        case (.qwen2?, false): return .qwen2
        default: throw TokenizerError.unsupportedPreTokenizer(found: found)
        }
    }

    /// Whether a Split regex is `kind`'s (GPT-2's with or without the final `|\s+`, which changes nothing).
    private static func splitMatches(_ pattern: String, _ kind: PreTokenizerKind) -> Bool {
        guard kind != .smollm else { return false }
        let expected = PreTokenizerKind.splitPattern(kind)
        if pattern == expected { return true }
        return kind == .gpt2 && pattern + #"|\s+"# == expected
    }

    /// The special tokens a post-processor template puts first and last around `$A`.
    private static func templateSpecialTokens(_ value: Any?) -> (first: String?, last: String?) {
        guard let p = value as? [String: Any] else { return (nil, nil) }
        switch p["type"] as? String {
        case "Sequence":
            for inner in (p["processors"] as? [Any]) ?? [] {
                let found = templateSpecialTokens(inner)
                if found.first != nil || found.last != nil { return found }
            }
            return (nil, nil)
        case "TemplateProcessing":
            let single = (p["single"] as? [Any]) ?? []
            func special(_ item: Any?) -> String? {
                ((item as? [String: Any])?["SpecialToken"] as? [String: Any])?["id"] as? String
            }
            return (special(single.first), single.count > 1 ? special(single.last) : nil)
        case "RobertaProcessing", "BertProcessing":
            let cls = (p["cls"] as? [Any])?.first as? String
            let sep = (p["sep"] as? [Any])?.first as? String
            return (cls, sep)
        default:
            return (nil, nil)
        }
    }

    /// Compact JSON of a value for error messages.
    private static func describeJSON(_ value: Any) -> String {
        guard JSONSerialization.isValidJSONObject(value),
              let data = try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys]) else {
            return "\(value)"
        }
        let s = String(decoding: data, as: UTF8.self)
        return s.count > 300 ? String(s.prefix(300)) + "..." : s
    }
}
