// Shared fixtures of the data-format tests: the SmolLM2 tokenizer and chat template, read from
// the demo GGUF by a minimal metadata reader (this test target links DTrainData only, not the
// GGUF loader of DTrainIO), and helpers to write temporary files.
import DTrainData
import DTrainTestSupport
import Foundation

struct FormatFixtureError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

/// The GGUF metadata values the tokenizer needs.
private enum GGUFMeta {
    case int(Int), bool(Bool), string(String), strings([String]), ints([Int]), other
}

/// Reads the key/value section of a GGUF file (v2/v3, little-endian).
private func readGGUFMetadata(path: String) throws -> [String: GGUFMeta] {
    let data = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped)
    return try data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) -> [String: GGUFMeta] in
        var at = 0
        func u32() -> UInt32 { defer { at += 4 }; return raw.loadUnaligned(fromByteOffset: at, as: UInt32.self) }
        func u64() -> UInt64 { defer { at += 8 }; return raw.loadUnaligned(fromByteOffset: at, as: UInt64.self) }
        func string() -> String {
            let n = Int(u64())
            defer { at += n }
            return String(decoding: UnsafeRawBufferPointer(rebasing: raw[at..<(at + n)]), as: UTF8.self)
        }
        func scalar(_ type: UInt32) throws -> GGUFMeta {
            switch type {
            case 0, 1: defer { at += 1 }; return .int(Int(raw[at]))
            case 2, 3: defer { at += 2 }; return .int(Int(raw.loadUnaligned(fromByteOffset: at, as: UInt16.self)))
            case 4: return .int(Int(u32()))
            case 5: return .int(Int(Int32(bitPattern: u32())))
            case 6: at += 4; return .other
            case 7: defer { at += 1 }; return .bool(raw[at] != 0)
            case 8: return .string(string())
            case 10: return .int(Int(u64()))
            case 11: return .int(Int(Int64(bitPattern: u64())))
            case 12: at += 8; return .other
            default: throw FormatFixtureError(message: "GGUF: unknown value type \(type)")
            }
        }
        guard raw.count > 24, u32() == 0x4655_4747 else { throw FormatFixtureError(message: "\(path): not a GGUF file") }
        _ = u32()          // version
        _ = u64()          // tensor count
        let kvCount = Int(u64())
        var out = [String: GGUFMeta]()
        for _ in 0..<kvCount {
            let key = string()
            let type = u32()
            if type == 9 {
                let itemType = u32()
                let count = Int(u64())
                var strings = [String](), ints = [Int]()
                for _ in 0..<count {
                    switch try scalar(itemType) {
                    case .string(let s): strings.append(s)
                    case .int(let i): ints.append(i)
                    default: break
                    }
                }
                out[key] = itemType == 8 ? .strings(strings) : .ints(ints)
            } else {
                out[key] = try scalar(type)
            }
        }
        return out
    }
}

/// The SmolLM2-135M-Instruct tokenizer and chat template (with bos/eos as the GGUF names them).
struct SmolLM2 {
    let tokenizer: BPETokenizer
    let templateSource: String
    let bos: String?
    let eos: String?

    static let shared: Result<SmolLM2, any Error> = Result {
        let meta = try readGGUFMetadata(path: try Fixtures.smolLM2Path())
        guard case .strings(let tokens)? = meta["tokenizer.ggml.tokens"],
              case .strings(let merges)? = meta["tokenizer.ggml.merges"],
              case .string(let template)? = meta["tokenizer.chat_template"] else {
            throw FormatFixtureError(message: "SmolLM2 GGUF lacks tokenizer keys")
        }
        var types: [Int]?
        if case .ints(let t)? = meta["tokenizer.ggml.token_type"] { types = t }
        var kind = PreTokenizerKind.default
        if case .string(let name)? = meta["tokenizer.ggml.pre"] { kind = try PreTokenizerKind(ggufName: name) }
        func int(_ key: String) -> Int? { if case .int(let i)? = meta[key] { return i }; return nil }
        func bool(_ key: String) -> Bool? { if case .bool(let b)? = meta[key] { return b }; return nil }
        let tok = BPETokenizer(tokens: tokens, merges: merges, tokenTypes: types, preTokenizer: kind,
                               bosTokenID: int("tokenizer.ggml.bos_token_id"), eosTokenID: int("tokenizer.ggml.eos_token_id"),
                               addBOS: bool("tokenizer.ggml.add_bos_token") ?? kind.addsBOSByDefault,
                               addEOS: bool("tokenizer.ggml.add_eos_token") ?? false, specialTokens: nil)
        return SmolLM2(tokenizer: tok, templateSource: template, bos: tok.bosTokenID.map(tok.tokenString),
                       eos: tok.eosTokenID.map(tok.tokenString))
    }

    static func get() throws -> SmolLM2 { try shared.get() }

    func template() throws -> ChatTemplateContext {
        try ChatTemplateContext(source: templateSource, bosToken: bos, eosToken: eos, origin: "SmolLM2 GGUF")
    }

    func encoder(_ options: EncoderOptions = EncoderOptions()) throws -> ExampleEncoder {
        ExampleEncoder(tokenizer: tokenizer, template: try template(), options: options)
    }
}

/// A fresh temporary directory for one test.
func temporaryDirectory() throws -> URL {
    try TestScratch.directory("data")
}

/// Writes `lines` joined by newlines (plus a final one) to `name` in `dir`; returns the path.
@discardableResult
func writeLines(_ lines: [String], to name: String, in dir: URL) throws -> String {
    let url = dir.appendingPathComponent(name)
    try Data((lines.joined(separator: "\n") + "\n").utf8).write(to: url)
    return url.path
}

/// Reads every record of in-memory JSONL text.
func readRecords(_ text: String, options: ReaderOptions = ReaderOptions(), name: String = "t.jsonl")
    -> [(line: Int, result: Result<DataRecord, RecordError>)] {
    var reader = DataRecordReader(name: name, bytes: Data(text.utf8), options: options)
    return reader.readAll()
}

/// The example's tokens as (vocabulary string, trained) pairs, joined for readable comparisons:
/// trained runs are wrapped in [ ], as the hand-written expectations are.
func maskedText(_ example: TokenizedExample, _ tokenizer: BPETokenizer) -> String {
    LossMaskDisplay.render(example, tokenizer: tokenizer, style: .brackets)
        .replacingOccurrences(of: "⟦", with: "[").replacingOccurrences(of: "⟧", with: "]")
}
