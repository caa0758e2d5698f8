// Byte-level BPE on toy vocabularies built here: merge order, byte fallback, special tokens, and
// each pre-tokenizer's split of tricky strings. The expected splits were produced by Hugging Face
// tokenizers 0.23 (Split(Regex(...), "isolated"), Digits(individual_digits) for SmolLM).
import Foundation
import Testing
import DTrainData

// MARK: - Toy vocabularies

/// GPT-2's byte alphabet, rebuilt here so the tests depend on the public API only.
private let byteAlphabet: [String] = {
    var out = [String]()
    var next: UInt32 = 256
    for b in 0..<256 {
        let printable = (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b)
        let v: UInt32
        if printable { v = UInt32(b) } else { v = next; next += 1 }
        out.append(String(Character(Unicode.Scalar(v)!)))
    }
    return out
}()

/// The vocabulary string of some text's UTF-8 bytes ("a b" -> "aĠb").
private func spelled(_ text: String) -> String {
    text.utf8.map { byteAlphabet[Int($0)] }.joined()
}

/// A tokenizer whose ids 0...255 are the bytes, then one token per merge result (in merge order),
/// then `extra` tokens (normal), then `specials` (control tokens).
private func toy(merges: [String], extra: [String] = [], specials: [String] = [], kind: PreTokenizerKind = .gpt2,
                 bos: Int? = nil, eos: Int? = nil, addBOS: Bool = false, addEOS: Bool = false,
                 ignoreMerges: Bool? = nil) -> BPETokenizer {
    var tokens = byteAlphabet
    for rule in merges {
        let parts = rule.split(separator: " ", maxSplits: 1)
        let merged = String(parts[0] + parts[1])
        if !tokens.contains(merged) { tokens.append(merged) }
    }
    for t in extra where !tokens.contains(t) { tokens.append(t) }
    var types = [Int](repeating: 1, count: tokens.count)
    for s in specials {
        tokens.append(s)
        types.append(3)
    }
    return BPETokenizer(tokens: tokens, merges: merges, tokenTypes: types, preTokenizer: kind,
                        bosTokenID: bos, eosTokenID: eos, addBOS: addBOS, addEOS: addEOS,
                        specialTokens: nil, ignoreMerges: ignoreMerges)
}

/// The vocabulary strings of `ids`.
private func strings(_ tok: BPETokenizer, _ ids: [Int32]) -> [String] {
    ids.map { tok.tokenString($0) }
}

// MARK: - Byte level

@Test func byteAlphabetSpellsEveryByte() {
    let tok = toy(merges: [])
    #expect(tok.vocabSize == 256)
    #expect(tok.tokenString(32) == "Ġ")
    #expect(tok.tokenString(10) == "Ċ")
    #expect(tok.tokenString(65) == "A")
    #expect(tok.id(of: "Ġ") == 32)
    // With no merges every byte is its own token, so the ids are the UTF-8 bytes.
    let text = "a b\n\t\u{0}\u{7F}"
    #expect(tok.encode(text) == text.utf8.map { Int32($0) })
    #expect(tok.decode(tok.encode(text)) == text)
}

@Test func arbitraryUTF8FallsBackToBytes() {
    let tok = toy(merges: ["Ġ w", "Ġw o"])
    for text in ["😀", "é", "日本語", "👨‍👩‍👧‍👦 flag 🇫🇷", "Ünïcödé ∑∫√∞", "\u{10FFFF}\u{FFFD}", "tab\there\r\nwo"] {
        let ids = tok.encode(text)
        #expect(tok.decode(ids) == text, "round trip of \(text.debugDescription)")
        #expect(tok.decodeBytes(ids) == Array(text.utf8))
    }
    #expect(strings(tok, tok.encode("😀")) == ["ð", "Ł", "ĺ", "Ģ"])
    // A sequence cut inside a character decodes to U+FFFD, not a crash.
    #expect(tok.decode(Array(tok.encode("😀").prefix(2))) == "\u{FFFD}")
}

// MARK: - Merges

@Test func lowerRankMergesFirst() {
    let ab = toy(merges: ["a b", "b c"])
    #expect(strings(ab, ab.encode("abc")) == ["ab", "c"])
    let bc = toy(merges: ["b c", "a b"])
    #expect(strings(bc, bc.encode("abc")) == ["a", "bc"])
}

@Test func tiesMergeLeftmostFirst() {
    let tok = toy(merges: ["a a"])
    #expect(strings(tok, tok.encode("aaa")) == ["aa", "a"])
    #expect(strings(tok, tok.encode("aaaaa")) == ["aa", "aa", "a"])
}

@Test func mergesChainIntoWords() {
    let tok = toy(merges: ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld"])
    #expect(strings(tok, tok.encode("hello world")) == ["hello", "Ġworld"])
    #expect(strings(tok, tok.encode("hell")) == ["hell"])
    #expect(strings(tok, tok.encode("yellow")) == ["y", "e", "ll", "o", "w"])
}

@Test func longWordsMergeLikeShortOnes() {
    // Words over 48 bytes take the heap path; both paths must merge in the same order.
    let tok = toy(merges: ["a a", "aa aa", "aaaa aaaa"])
    let a8 = tok.id(of: "aaaaaaaa")!, a4 = tok.id(of: "aaaa")!, a2 = tok.id(of: "aa")!, a = tok.id(of: "a")!
    #expect(tok.encode(String(repeating: "a", count: 40)) == [Int32](repeating: a8, count: 5))
    #expect(tok.encode(String(repeating: "a", count: 100)) == [Int32](repeating: a8, count: 12) + [a4])
    #expect(tok.encode(String(repeating: "a", count: 103)) == [Int32](repeating: a8, count: 12) + [a4, a2, a])
}

@Test func unreachableVocabularyWordsNeedIgnoreMerges() {
    // "abc" is in the vocabulary, but no merge builds it: BPE gives ab + c, unless merges are
    // ignored for words already in the vocabulary (Llama 3).
    let plain = toy(merges: ["a b"], extra: ["abc"], ignoreMerges: false)
    #expect(strings(plain, plain.encode("abc")) == ["ab", "c"])
    let ignoring = toy(merges: ["a b"], extra: ["abc"], ignoreMerges: true)
    #expect(strings(ignoring, ignoring.encode("abc")) == ["abc"])
    #expect(toy(merges: [], kind: .llama3).ignoresMerges)
    #expect(!toy(merges: [], kind: .smollm).ignoresMerges)
}

@Test func mergesNamingUnknownTokensAreSkipped() {
    let tok = BPETokenizer(tokens: byteAlphabet + ["ab"], merges: ["a b", "x zz", "nospace"], tokenTypes: nil,
                           preTokenizer: .gpt2, bosTokenID: nil, eosTokenID: nil, addBOS: false, addEOS: false,
                           specialTokens: nil)
    #expect(strings(tok, tok.encode("abxzz")) == ["ab", "x", "z", "z"])
}

// MARK: - Special tokens

@Test func specialTokensAreMatchedVerbatim() {
    let tok = toy(merges: ["u s", "us e", "use r"], specials: ["<|im_start|>", "<|im_end|>"])
    let start = tok.id(of: "<|im_start|>")!, end = tok.id(of: "<|im_end|>")!
    #expect(tok.isSpecial(start) && !tok.isSpecial(tok.id(of: "user")!))
    let text = "<|im_start|>user\nhi<|im_end|>\n"
    let ids = tok.encode(text)
    #expect(ids.first == start)
    #expect(strings(tok, ids) == ["<|im_start|>", "user", "Ċ", "h", "i", "<|im_end|>", "Ċ"])
    #expect(ids.filter { $0 == end }.count == 1)
    #expect(tok.decode(ids) == text)
    #expect(tok.decode(ids, skipSpecialTokens: true) == "user\nhi\n")
    // Unparsed, the markup is ordinary text and splits like any other.
    let plain = tok.encode(text, parseSpecialTokens: false)
    #expect(!plain.contains(start) && !plain.contains(end))
    #expect(tok.decode(plain) == text)
    // A partial marker is ordinary text.
    #expect(!tok.encode("<|im_sta").contains(start))
}

@Test func longestSpecialTokenWins() {
    let tok = toy(merges: [], specials: ["<s>", "<s>x", "</s>"])
    #expect(strings(tok, tok.encode("a<s>xb<s>y</s>")) == ["a", "<s>x", "b", "<s>", "y", "</s>"])
}

@Test func addSpecialTokensAddsBOSAndEOS() {
    let tok = toy(merges: [], specials: ["<bos>", "<eos>"], bos: 256, eos: 257, addBOS: true, addEOS: true)
    #expect(tok.bosTokenID == 256 && tok.eosTokenID == 257)
    #expect(tok.encode("a", addSpecialTokens: true) == [256, 97, 257])
    #expect(tok.encode("a") == [97])
    let noBOS = toy(merges: [], specials: ["<bos>"], bos: 256, addBOS: false)
    #expect(noBOS.encode("a", addSpecialTokens: true) == [97])
}

// MARK: - Pre-tokenizers

private let trickyStrings = [
    "Hello, world! It's 2024.",
    "  two  spaces\tand\ttabs  \n\n  x  ",
    "I'M DON'T you'll we'Ve ſ'ſ 'x",
    "12345 x1234567",
    "a\r\n\r\nb  \n c",
    "(int)x;\n}\n\n",
    "naïve café 日本語\u{00A0}x\u{3000}y",
]

private let expectedSplits: [PreTokenizerKind: [[String]]] = [
    .gpt2: [
        ["Hello", ",", " world", "!", " It", "'s", " 2024", "."],
        [" ", " two", " ", " spaces", "\t", "and", "\t", "tabs", "  \n\n ", " x", "  "],
        ["I", "'", "M", " DON", "'", "T", " you", "'ll", " we", "'", "Ve", " ſ", "'", "ſ", " '", "x"],
        ["12345", " x", "1234567"],
        ["a", "\r\n\r", "\n", "b", "  \n", " c"],
        ["(", "int", ")", "x", ";", "\n", "}", "\n\n"],
        ["naïve", " café", " 日本語", "\u{00A0}", "x", "\u{3000}", "y"],
    ],
    .smollm: [
        ["Hello", ",", " world", "!", " It", "'s", " ", "2", "0", "2", "4", "."],
        [" ", " two", " ", " spaces", "\t", "and", "\t", "tabs", "  \n\n ", " x", "  "],
        ["I", "'", "M", " DON", "'", "T", " you", "'ll", " we", "'", "Ve", " ſ", "'", "ſ", " '", "x"],
        ["1", "2", "3", "4", "5", " x", "1", "2", "3", "4", "5", "6", "7"],
        ["a", "\r\n\r", "\n", "b", "  \n", " c"],
        ["(", "int", ")", "x", ";", "\n", "}", "\n\n"],
        ["naïve", " café", " 日本語", "\u{00A0}", "x", "\u{3000}", "y"],
    ],
    .llama3: [
        ["Hello", ",", " world", "!", " It", "'s", " ", "202", "4", "."],
        [" ", " two", " ", " spaces", "\tand", "\ttabs", "  \n\n", " ", " x", "  "],
        ["I", "'M", " DON", "'T", " you", "'ll", " we", "'Ve", " ſ", "'ſ", " '", "x"],
        ["123", "45", " x", "123", "456", "7"],
        ["a", "\r\n\r\n", "b", "  \n", " c"],
        ["(int", ")x", ";\n", "}\n\n"],
        ["naïve", " café", " 日本語", "\u{00A0}x", "\u{3000}y"],
    ],
    .qwen2: [
        ["Hello", ",", " world", "!", " It", "'s", " ", "2", "0", "2", "4", "."],
        [" ", " two", " ", " spaces", "\tand", "\ttabs", "  \n\n", " ", " x", "  "],
        ["I", "'M", " DON", "'T", " you", "'ll", " we", "'Ve", " ſ", "'ſ", " '", "x"],
        ["1", "2", "3", "4", "5", " x", "1", "2", "3", "4", "5", "6", "7"],
        ["a", "\r\n\r\n", "b", "  \n", " c"],
        ["(int", ")x", ";\n", "}\n\n"],
        ["naïve", " café", " 日本語", "\u{00A0}x", "\u{3000}y"],
    ],
]

@Test(arguments: PreTokenizerKind.allCases)
func preTokenizerSplitsLikeTheRegex(kind: PreTokenizerKind) {
    let tok = toy(merges: [], kind: kind)
    for (text, expected) in zip(trickyStrings, expectedSplits[kind]!) {
        let pieces = tok.preTokenize(text)
        #expect(pieces == expected, "\(kind) split of \(text.debugDescription)")
        #expect(pieces.joined() == text)
    }
}

@Test func preTokenizerEdgeCases() {
    for kind in PreTokenizerKind.allCases {
        let tok = toy(merges: [], kind: kind)
        #expect(tok.preTokenize("").isEmpty)
        #expect(tok.preTokenize("   ") == ["   "], "\(kind): trailing whitespace is one piece")
        #expect(tok.encode("").isEmpty)
    }
    // `\s+(?!\S)`: a run before a word gives the word its last space.
    #expect(toy(merges: [], kind: .gpt2).preTokenize("a   b") == ["a", "  ", " b"])
    // A lone non-space whitespace before a word stands alone in GPT-2, prefixes it in Llama 3.
    #expect(toy(merges: [], kind: .gpt2).preTokenize("\u{2003}b") == ["\u{2003}", "b"])
    #expect(toy(merges: [], kind: .llama3).preTokenize("\u{2003}b") == ["\u{2003}b"])
    // Combining marks are not letters: they split from the letter before them (as in the regex).
    #expect(toy(merges: [], kind: .gpt2).preTokenize("e\u{301}t\u{E9}") == ["e", "\u{301}", "t\u{E9}"])
}

@Test func preTokenizerNamesFromGGUF() throws {
    #expect(try PreTokenizerKind(ggufName: "smollm") == .smollm)
    #expect(try PreTokenizerKind(ggufName: "llama-bpe") == .llama3)
    #expect(try PreTokenizerKind(ggufName: "qwen2") == .qwen2)
    #expect(try PreTokenizerKind(ggufName: "gpt2") == .gpt2)
    #expect(try PreTokenizerKind(ggufName: "default") == .default)
    #expect(PreTokenizerKind.default == .gpt2)
    do {
        _ = try PreTokenizerKind(ggufName: "tekken-9000")
        Issue.record("an unknown name must throw")
    } catch let error as TokenizerError {
        #expect(error == .unknownPreTokenizer(name: "tekken-9000"))
        #expect(error.description.contains("tekken-9000") && error.description.contains("HINT"))
    }
}

// MARK: - tokenizer.json

/// A byte-level tokenizer.json over the toy byte vocabulary plus `merges`.
private func toyJSON(merges: [Any], preTokenizer: Any, normalizer: Any = NSNull(),
                     postProcessor: Any = NSNull(), ignoreMerges: Bool = false) throws -> Data {
    var vocab = [String: Int]()
    for (i, t) in byteAlphabet.enumerated() { vocab[t] = i }
    for rule in merges {
        let pair = (rule as? [String]) ?? (rule as! String).split(separator: " ").map(String.init)
        if vocab[pair[0] + pair[1]] == nil { vocab[pair[0] + pair[1]] = vocab.count }
    }
    let root: [String: Any] = [
        "version": "1.0",
        "added_tokens": [["id": 1000, "content": "<|eot|>", "special": true],
                         ["id": 1001, "content": "<|bot|>", "special": true]],
        "normalizer": normalizer,
        "pre_tokenizer": preTokenizer,
        "post_processor": postProcessor,
        "decoder": ["type": "ByteLevel"],
        "model": ["type": "BPE", "vocab": vocab, "merges": merges, "ignore_merges": ignoreMerges,
                  "continuing_subword_prefix": NSNull(), "end_of_word_suffix": NSNull()],
    ]
    return try JSONSerialization.data(withJSONObject: root)
}

private let byteLevelOnly: [String: Any] = ["type": "ByteLevel", "add_prefix_space": false, "use_regex": false]

@Test func huggingFaceJSONRecognisesEachPreTokenizer() throws {
    let split = { (kind: PreTokenizerKind, regex: String) -> [String: Any] in
        ["type": "Sequence", "pretokenizers": [
            ["type": "Split", "pattern": ["Regex": regex], "behavior": "Isolated", "invert": false],
            byteLevelOnly]]
    }
    let llama3 = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    let qwen2 = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    let gpt2 = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
    let cases: [(Any, PreTokenizerKind)] = [
        (["type": "ByteLevel", "add_prefix_space": false, "use_regex": true], .gpt2),
        (["type": "Sequence", "pretokenizers": [["type": "Digits", "individual_digits": true],
                                                ["type": "ByteLevel", "add_prefix_space": false, "use_regex": true]]], .smollm),
        (split(.llama3, llama3), .llama3),
        (split(.qwen2, qwen2), .qwen2),
        (split(.gpt2, gpt2), .gpt2),
    ]
    for (pre, kind) in cases {
        let tok = try BPETokenizer.fromHuggingFaceJSON(toyJSON(merges: ["a b"], preTokenizer: pre))
        #expect(tok.preTokenizer == kind)
        #expect(tok.vocabSize == 1002)
        #expect(tok.isSpecial(1000) && tok.isSpecial(1001))
        #expect(strings(tok, tok.encode("ab<|eot|>")) == ["ab", "<|eot|>"])
    }
    let unknown = split(.gpt2, #"\w+|\s+"#)
    #expect(throws: TokenizerError.self) {
        _ = try BPETokenizer.fromHuggingFaceJSON(toyJSON(merges: [], preTokenizer: unknown))
    }
    #expect(throws: TokenizerError.self) {
        _ = try BPETokenizer.fromHuggingFaceJSON(toyJSON(merges: [], preTokenizer: NSNull()))
    }
}

@Test func huggingFaceJSONMergesAsStringsOrPairs() throws {
    let pre: [String: Any] = ["type": "ByteLevel", "add_prefix_space": false, "use_regex": true]
    let rules = ["Ġ t", "h e", "Ġt he"]
    let fromStrings = try BPETokenizer.fromHuggingFaceJSON(toyJSON(merges: rules, preTokenizer: pre))
    let fromPairs = try BPETokenizer.fromHuggingFaceJSON(
        toyJSON(merges: rules.map { $0.split(separator: " ").map(String.init) }, preTokenizer: pre))
    #expect(strings(fromStrings, fromStrings.encode("the the")) == ["t", "he", "Ġthe"])
    #expect(fromPairs.encode("the the") == fromStrings.encode("the the"))
}

@Test func huggingFaceJSONTakesBOSFromTemplateAndConfig() throws {
    let pre: [String: Any] = ["type": "ByteLevel", "add_prefix_space": false, "use_regex": true]
    let template: [String: Any] = [
        "type": "TemplateProcessing",
        "single": [["SpecialToken": ["id": "<|bot|>", "type_id": 0]], ["Sequence": ["id": "A", "type_id": 0]]],
        "special_tokens": ["<|bot|>": ["id": "<|bot|>", "ids": [1001], "tokens": ["<|bot|>"]]],
    ]
    let data = try toyJSON(merges: [], preTokenizer: pre, postProcessor: template)
    let tok = try BPETokenizer.fromHuggingFaceJSON(data)
    #expect(tok.addBOS && tok.bosTokenID == 1001 && !tok.addEOS)
    #expect(tok.encode("a", addSpecialTokens: true) == [1001, 97])

    let config = try JSONSerialization.data(withJSONObject: [
        "add_bos_token": false, "add_eos_token": true,
        "bos_token": "<|bot|>", "eos_token": ["content": "<|eot|>", "special": true],
    ])
    let configured = try BPETokenizer.fromHuggingFaceJSON(data, config: config)
    #expect(!configured.addBOS && configured.addEOS && configured.eosTokenID == 1000)
    #expect(configured.encode("a", addSpecialTokens: true) == [97, 1000])
}

@Test func huggingFaceJSONRejectsOtherModels() throws {
    let wordPiece = try JSONSerialization.data(withJSONObject: ["model": ["type": "WordPiece", "vocab": [String: Int]()] as [String: Any]])
    #expect(throws: TokenizerError.unsupportedModel(found: "\"WordPiece\"")) {
        _ = try BPETokenizer.fromHuggingFaceJSON(wordPiece)
    }
    #expect(throws: TokenizerError.self) { _ = try BPETokenizer.fromHuggingFaceJSON(Data("{".utf8)) }
}

@Test func huggingFaceJSONAppliesNFC() throws {
    let pre: [String: Any] = ["type": "ByteLevel", "add_prefix_space": false, "use_regex": true]
    let tok = try BPETokenizer.fromHuggingFaceJSON(toyJSON(merges: [], preTokenizer: pre, normalizer: ["type": "NFC"]))
    #expect(tok.normalizesNFC)
    #expect(tok.encode("e\u{301}") == tok.encode("\u{E9}"))
    #expect(throws: TokenizerError.self) {
        _ = try BPETokenizer.fromHuggingFaceJSON(toyJSON(merges: [], preTokenizer: pre, normalizer: ["type": "Lowercase"]))
    }
}

// MARK: - Threads

@Test func concurrentEncodesAgree() {
    let tok = toy(merges: ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld"],
                  specials: ["<|x|>"])
    let texts = (0..<64).map { "hello world<|x|> \($0) 😀 " + String(repeating: "hello ", count: $0) }
    let serial = texts.map { tok.encode($0) }
    let results = UnsafeMutableBufferPointer<[Int32]>.allocate(capacity: texts.count)
    results.initialize(repeating: [])
    defer { results.deallocate() }
    DispatchQueue.concurrentPerform(iterations: texts.count) { i in results[i] = tok.encode(texts[i]) }
    #expect(Array(results) == serial)
}
