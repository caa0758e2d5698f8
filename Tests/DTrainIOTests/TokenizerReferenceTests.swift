// The SmolLM2 GGUF's tokenizer against the ids transformers gives (../shared/reference/smollm2):
// 20 short strings (tokenizer-cases.json) and the three prompts' `pN.ids` (cases.safetensors).
// Plus the loaders' errors, on small GGUF and tokenizer.json files written here.
import DTrainData
import DTrainIO
import DTrainTestSupport
import Foundation
import Testing

/// The SmolLM2 tokenizer, loaded once for all tests of this file.
private let smolLM2Tokenizer: Result<BPETokenizer, any Error> = Result {
    let file = try GGUFFile(path: try Fixtures.smolLM2Path())
    return try TokenizerLoader.fromGGUF(file)
}

/// "" when equal, else where and how `actual` first differs from `expected`.
private func firstDifference(_ actual: [Int32], _ expected: [Int32]) -> String {
    if actual == expected { return "" }
    let n = min(actual.count, expected.count)
    let i = (0..<n).first { actual[$0] != expected[$0] } ?? n
    let got = i < actual.count ? "\(actual[i])" : "end"
    let want = i < expected.count ? "\(expected[i])" : "end"
    return "first difference at position \(i): got \(got), expected \(want) "
        + "(lengths \(actual.count) vs \(expected.count)); got \(actual[max(0, i - 3)..<min(actual.count, i + 4)]), "
        + "expected \(expected[max(0, i - 3)..<min(expected.count, i + 4)])"
}

struct SmolLM2TokenizerCase: Decodable {
    let text: String
    let ids: [Int32]
    let decoded_roundtrip: Bool
}

struct SmolLM2TokenizerCases: Decodable {
    let bos_token_id: Int
    let eos_token_id: Int
    let vocab_size: Int
    let strings: [SmolLM2TokenizerCase]
}

private let referenceDir = Fixtures.referenceDir.appendingPathComponent("smollm2")

@Suite struct TokenizerReferenceTests {
    let tokenizer: BPETokenizer

    init() throws {
        tokenizer = try smolLM2Tokenizer.get()
    }

    func cases() throws -> SmolLM2TokenizerCases {
        let data = try Data(contentsOf: referenceDir.appendingPathComponent("tokenizer-cases.json"))
        return try JSONDecoder().decode(SmolLM2TokenizerCases.self, from: data)
    }

    @Test func vocabularyMatchesTheReference() throws {
        let ref = try cases()
        #expect(tokenizer.vocabSize == ref.vocab_size)
        #expect(tokenizer.bosTokenID == Int32(ref.bos_token_id))
        #expect(tokenizer.eosTokenID == Int32(ref.eos_token_id))
        #expect(tokenizer.preTokenizer == .smollm)
        #expect(!tokenizer.addBOS && !tokenizer.addEOS)
        #expect(tokenizer.tokenString(1) == "<|im_start|>" && tokenizer.isSpecial(1))
        #expect(tokenizer.id(of: "Ġthe") == 260)
    }

    @Test func shortStringsGiveTheReferenceIds() throws {
        let ref = try cases()
        #expect(ref.strings.count == 20)
        for c in ref.strings {
            let ids = tokenizer.encode(c.text)
            let difference = firstDifference(ids, c.ids)
            #expect(difference.isEmpty, "\(c.text.debugDescription): \(difference)")
            // add_bos_token is false in the GGUF, so special tokens add nothing.
            #expect(tokenizer.encode(c.text, addSpecialTokens: true) == ids)
        }
    }

    @Test func shortStringsDecodeBack() throws {
        for c in try cases().strings where c.decoded_roundtrip {
            #expect(tokenizer.decode(tokenizer.encode(c.text)) == c.text, "round trip of \(c.text.debugDescription)")
            #expect(tokenizer.decode(c.ids) == c.text, "decode of the reference ids of \(c.text.debugDescription)")
        }
    }

    @Test func promptsGiveTheReferenceIds() throws {
        struct Prompt: Decodable { let name: String; let text: String }
        struct Prompts: Decodable { let prompts: [Prompt] }
        let prompts = try JSONDecoder().decode(
            Prompts.self, from: Data(contentsOf: referenceDir.appendingPathComponent("prompts.json"))).prompts
        let cases = try SafetensorsFile(path: referenceDir.appendingPathComponent("cases.safetensors").path)
        #expect(prompts.map(\.name) == ["p0", "p1", "p2"])
        for p in prompts {
            let expected = try cases.ints("\(p.name).ids")
            let ids = tokenizer.encode(p.text)
            let difference = firstDifference(ids, expected)
            #expect(difference.isEmpty, "prompt \(p.name): \(difference)")
            #expect(tokenizer.decode(ids) == p.text)
        }
    }

    @Test func specialTokensCanBeLeftUnparsed() {
        let text = "<|im_start|>user\nHi!<|im_end|>\n"
        #expect(tokenizer.encode(text).first == 1)
        let plain = tokenizer.encode(text, parseSpecialTokens: false)
        #expect(!plain.contains(1) && !plain.contains(2))
        #expect(tokenizer.decode(plain) == text)
    }
}

// MARK: - Loader errors

/// A GGUF v3 file with metadata only (no tensors), for the loader's error paths.
private func writeGGUF(_ entries: [(String, GGUFValue)]) throws -> String {
    var out = [UInt8]()
    func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
    func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
    func str(_ s: String) { u64(UInt64(s.utf8.count)); out.append(contentsOf: s.utf8) }
    func typeID(_ v: GGUFValue) -> UInt32 {
        switch v {
        case .uint32: return 4
        case .int32: return 5
        case .bool: return 7
        case .string: return 8
        case .array: return 9
        default: fatalError("writeGGUF: add \(v.typeName)")
        }
    }
    func value(_ v: GGUFValue) {
        switch v {
        case .uint32(let x): u32(x)
        case .int32(let x): u32(UInt32(bitPattern: x))
        case .bool(let b): out.append(b ? 1 : 0)
        case .string(let s): str(s)
        case .array(let a):
            u32(a.first.map(typeID) ?? 8)
            u64(UInt64(a.count))
            a.forEach(value)
        default: fatalError("writeGGUF: add \(v.typeName)")
        }
    }
    out.append(contentsOf: Array("GGUF".utf8))
    u32(3)
    u64(0)
    u64(UInt64(entries.count))
    for (key, v) in entries {
        str(key)
        u32(typeID(v))
        value(v)
    }
    let path = TestScratch.file("tokenizer.gguf").path
    try Data(out).write(to: URL(fileURLWithPath: path))
    return path
}

/// Byte alphabet tokens "!"..."~" plus a few merges: enough for a tiny gpt2-model GGUF.
private func tinyVocabulary() -> [(String, GGUFValue)] {
    let tokens = (0x21...0x7E).map { String(UnicodeScalar(UInt8($0))) } + ["ab", "<|end|>"]
    return [
        ("tokenizer.ggml.model", .string("gpt2")),
        ("tokenizer.ggml.pre", .string("qwen2")),
        ("tokenizer.ggml.tokens", .array(tokens.map { .string($0) })),
        ("tokenizer.ggml.merges", .array([.string("a b")])),
        ("tokenizer.ggml.token_type", .array(tokens.indices.map { .int32($0 == tokens.count - 1 ? 3 : 1) })),
        ("tokenizer.ggml.eos_token_id", .uint32(UInt32(tokens.count - 1))),
        ("tokenizer.ggml.add_eos_token", .bool(true)),
    ]
}

@Test func ggufLoaderReadsEveryKey() throws {
    let path = try writeGGUF(tinyVocabulary())
    defer { try? FileManager.default.removeItem(atPath: path) }
    let tok = try TokenizerLoader.fromGGUF(GGUFFile(path: path))
    #expect(tok.vocabSize == 96 && tok.preTokenizer == .qwen2)
    #expect(tok.eosTokenID == 95 && tok.addEOS && !tok.addBOS && tok.bosTokenID == nil)
    let ab = tok.id(of: "ab")!
    #expect(tok.encode("ab<|end|>", addSpecialTokens: true) == [ab, 95, 95])
}

@Test func ggufLoaderRefusesWhatItCannotLoad() throws {
    func load(_ entries: [(String, GGUFValue)]) throws {
        let path = try writeGGUF(entries)
        defer { try? FileManager.default.removeItem(atPath: path) }
        _ = try TokenizerLoader.fromGGUF(GGUFFile(path: path))
    }
    let base = tinyVocabulary()
    func replacing(_ key: String, with value: GGUFValue?) -> [(String, GGUFValue)] {
        base.compactMap { $0.0 == key ? value.map { (key, $0) } : $0 }
    }
    do {
        try load(replacing("tokenizer.ggml.model", with: .string("llama")))
        Issue.record("a SentencePiece vocabulary must be refused")
    } catch let error as TokenizerLoaderError {
        #expect(error.description.contains("\"llama\"") && error.description.contains("HINT"))
    }
    do {
        try load(replacing("tokenizer.ggml.merges", with: nil))
        Issue.record("a vocabulary without merges must be refused")
    } catch let error as TokenizerLoaderError {
        #expect(error.description.contains("tokenizer.ggml.merges"))
    }
    do {
        try load(replacing("tokenizer.ggml.pre", with: .string("no-such-pre")))
        Issue.record("an unknown pre-tokenizer must be refused")
    } catch let error as TokenizerError {
        #expect(error == .unknownPreTokenizer(name: "no-such-pre"))
    }
    // No tokenizer.ggml.pre at all means GPT-2's split.
    let path = try writeGGUF(replacing("tokenizer.ggml.pre", with: nil))
    defer { try? FileManager.default.removeItem(atPath: path) }
    #expect(try TokenizerLoader.fromGGUF(GGUFFile(path: path)).preTokenizer == .gpt2)
}

@Test func huggingFaceDirectoryLoaderReadsConfig() throws {
    let dir = try TestScratch.directory("hf")
    defer { try? FileManager.default.removeItem(at: dir) }
    #expect(throws: TokenizerLoaderError.self) { _ = try TokenizerLoader.fromHuggingFaceDirectory(dir) }

    var vocab = [String: Int]()
    for v in 0x21...0x7E { vocab[String(UnicodeScalar(UInt8(v)))] = v - 0x21 }
    vocab["Ġ"] = 94
    vocab["<s>"] = 95
    let json: [String: Any] = [
        "added_tokens": [["id": 95, "content": "<s>", "special": true]],
        "pre_tokenizer": ["type": "ByteLevel", "add_prefix_space": false, "use_regex": true],
        "model": ["type": "BPE", "vocab": vocab, "merges": [String]()],
    ]
    try JSONSerialization.data(withJSONObject: json).write(to: dir.appendingPathComponent("tokenizer.json"))
    let plain = try TokenizerLoader.fromHuggingFaceDirectory(dir)
    #expect(!plain.addBOS && plain.bosTokenID == nil)

    try JSONSerialization.data(withJSONObject: ["add_bos_token": true, "bos_token": "<s>"])
        .write(to: dir.appendingPathComponent("tokenizer_config.json"))
    let configured = try TokenizerLoader.fromHuggingFaceDirectory(dir)
    #expect(configured.addBOS && configured.bosTokenID == 95)
    #expect(configured.encode("a a", addSpecialTokens: true) == [95, 64, 94, 64])
}
