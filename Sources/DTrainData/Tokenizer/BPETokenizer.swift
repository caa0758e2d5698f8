// Byte-level BPE, as GPT-2, Llama 3, Qwen2 and SmolLM use it.
//
// encode: (1) special tokens are found verbatim in the text (longest match, left to right) and
// emitted as their ids; (2) each stretch between them is cut into words by the pre-tokenizer
// (PreTokenizer.swift); (3) each word's UTF-8 bytes are merged, lowest merge rank first, starting
// from one token per byte (BPEMerges.swift). Vocabulary strings are written in GPT-2's byte
// alphabet (ByteLevel.swift) and are turned into raw bytes once, at load, so encode and decode
// work on bytes only.
//
// Speed: a word whose merges end in a single vocabulary token (most words of ordinary text) is
// found by one hash lookup of its bytes; the table of such words is built at load by merging every
// vocabulary token's bytes and keeping those that come back as themselves, so the shortcut gives
// exactly what the merges would.

import Foundation

/// A byte-level BPE tokenizer: GPT-2's byte alphabet, ranked merges, a regex pre-tokenizer, and
/// special tokens matched verbatim.
///
/// Immutable once built; `encode` and `decode` may run on any number of threads at once.
public final class BPETokenizer: @unchecked Sendable {
    /// Number of token ids (the vocabulary size).
    public let vocabSize: Int
    /// Beginning-of-sequence token, if the model has one.
    public let bosTokenID: Int32?
    /// End-of-sequence token, if the model has one.
    public let eosTokenID: Int32?
    /// Whether `encode(_:addSpecialTokens: true)` puts BOS first.
    public let addBOS: Bool
    /// Whether `encode(_:addSpecialTokens: true)` puts EOS last.
    public let addEOS: Bool
    /// The regex split applied before merging.
    public let preTokenizer: PreTokenizerKind
    /// Whether a word that is already a vocabulary token is emitted whole without merging.
    public let ignoresMerges: Bool
    /// Whether text is put in Unicode NFC before pre-tokenization (a tokenizer.json NFC normalizer).
    public let normalizesNFC: Bool

    private let tokens: [String]
    private let idByString: [String: Int32]
    /// Special tokens (control and user-defined): matched verbatim, decoded verbatim.
    private let special: [Bool]
    /// Bytes of every token: raw bytes for byte-level tokens, UTF-8 text for the others.
    private let arena: UnsafeMutablePointer<UInt8>
    /// `arena[offsets[id] ..< offsets[id + 1]]` are the bytes of token `id`.
    private let offsets: UnsafeMutablePointer<Int32>
    /// Token of each single byte, or -1 when the vocabulary lacks it.
    private let byteTokens: UnsafeMutablePointer<Int32>
    private let pairs: PairTable
    /// Words emitted whole: every token the merges rebuild from its own bytes (or, with
    /// `ignoresMerges`, every byte-level token).
    private let words: WordTable
    private let specials: SpecialTokenTrie

    /// Builds a tokenizer from a GGUF-style vocabulary.
    ///
    /// - Parameters:
    ///   - tokens: token strings in GPT-2's byte alphabet (" the" is "Ġthe"), indexed by id;
    ///     special tokens as plain text ("<|im_start|>").
    ///   - merges: merge rules "left right", the rule's index being its rank (lower merges first).
    ///     Rules naming a token that is not in `tokens` are skipped.
    ///   - tokenTypes: GGUF token types per id (1 normal, 2 unknown, 3 control, 4 user-defined,
    ///     5 unused, 6 byte); types 3 and 4 are special: found verbatim in the input before
    ///     pre-tokenization and never split.
    ///   - preTokenizer: the regex split.
    ///   - bosTokenID, eosTokenID: ids of BOS and EOS, if any.
    ///   - addBOS, addEOS: whether `encode(_:addSpecialTokens: true)` adds them.
    ///   - specialTokens: more token strings to treat as special (each must be in `tokens`).
    ///   - ignoreMerges: emit a word that is a vocabulary token whole; nil = the pre-tokenizer's
    ///     default (true for Llama 3).
    ///   - normalizeNFC: put text in NFC before splitting (tokenizer.json NFC normalizers).
    public init(tokens: [String], merges: [String], tokenTypes: [Int]?, preTokenizer: PreTokenizerKind,
                bosTokenID: Int?, eosTokenID: Int?, addBOS: Bool, addEOS: Bool, specialTokens: [String]?,
                ignoreMerges: Bool? = nil, normalizeNFC: Bool = false) {
        let n = tokens.count
        let ignores = ignoreMerges ?? preTokenizer.ignoresMergesByDefault
        self.vocabSize = n
        self.tokens = tokens
        self.preTokenizer = preTokenizer
        self.ignoresMerges = ignores
        self.normalizesNFC = normalizeNFC
        self.bosTokenID = bosTokenID.flatMap { (0..<n).contains($0) ? Int32($0) : nil }
        self.eosTokenID = eosTokenID.flatMap { (0..<n).contains($0) ? Int32($0) : nil }
        self.addBOS = addBOS
        self.addEOS = addEOS

        var idByString = [String: Int32](minimumCapacity: n)
        for (i, t) in tokens.enumerated() where !t.isEmpty && idByString[t] == nil { idByString[t] = Int32(i) }
        self.idByString = idByString

        var special = [Bool](repeating: false, count: n)
        if let types = tokenTypes {
            for i in 0..<min(n, types.count) where types[i] == 3 || types[i] == 4 { special[i] = true }
        }
        for t in specialTokens ?? [] {
            if let id = idByString[t] { special[Int(id)] = true }
        }
        self.special = special

        // Token bytes; `byteLevel[id]` marks tokens written in the byte alphabet (BPE's own).
        var bytes = [UInt8]()
        bytes.reserveCapacity(n * 8)
        var offsetArray = [Int32](repeating: 0, count: n + 1)
        var byteLevel = [Bool](repeating: false, count: n)
        for i in 0..<n {
            if !special[i], let raw = ByteLevel.decode(tokens[i]) {
                bytes.append(contentsOf: raw)
                byteLevel[i] = true
            } else {
                bytes.append(contentsOf: tokens[i].utf8)
            }
            offsetArray[i + 1] = Int32(bytes.count)
        }
        let arena = UnsafeMutablePointer<UInt8>.allocate(capacity: max(bytes.count, 1))
        arena.initialize(from: bytes, count: bytes.count)
        let offsets = UnsafeMutablePointer<Int32>.allocate(capacity: n + 1)
        offsets.initialize(from: offsetArray, count: n + 1)
        let byteTokens = UnsafeMutablePointer<Int32>.allocate(capacity: 256)
        for b in 0..<256 {
            let id = idByString[ByteLevel.encode([UInt8(b)])] ?? -1
            byteTokens[b] = id >= 0 && byteLevel[Int(id)] ? id : -1
        }
        self.arena = arena
        self.offsets = offsets
        self.byteTokens = byteTokens

        var pairs = PairTable(expectedCount: merges.count)
        for (rank, rule) in merges.enumerated() {
            // "left right": the split is the first space after the first character.
            let scalars = rule.unicodeScalars
            guard let space = scalars.dropFirst().firstIndex(of: " ") else { continue }
            let left = String(scalars[..<space])
            let right = String(scalars[scalars.index(after: space)...])
            guard let a = idByString[left], let b = idByString[right], let m = idByString[left + right],
                  byteLevel[Int(a)], byteLevel[Int(b)], byteLevel[Int(m)] else { continue }
            pairs.insert(a, b, rank: rank, merged: m)
        }
        self.pairs = pairs

        var words = WordTable(expectedCount: n)
        var scratch = MergeScratch()
        var merged = [Int32]()
        for i in 0..<n where byteLevel[i] {
            let start = Int(offsetArray[i]), len = Int(offsetArray[i + 1]) - start
            guard len >= 2 else { continue }
            if !ignores {
                merged.removeAll(keepingCapacity: true)
                BPEMerge.merge(arena + start, len, byteTokens: byteTokens, pairs: pairs,
                               scratch: &scratch, into: &merged)
                guard merged.count == 1 && merged[0] == Int32(i) else { continue }
            }
            words.insert(Int32(i), arena: arena, offsets: offsets)
        }
        scratch.release()
        self.words = words

        var trie = SpecialTokenTrie()
        for i in 0..<n where special[i] { trie.insert(Array(tokens[i].utf8), id: Int32(i)) }
        self.specials = trie
    }

    deinit {
        arena.deallocate()
        offsets.deallocate()
        byteTokens.deallocate()
    }

    // MARK: - Lookup

    /// The vocabulary string of `id` (in the byte alphabet: " the" reads "Ġthe").
    public func tokenString(_ id: Int32) -> String {
        precondition(id >= 0 && Int(id) < vocabSize, "token id \(id) out of range 0..<\(vocabSize)")
        return tokens[Int(id)]
    }

    /// The id of the vocabulary string `token` (written in the byte alphabet), if any.
    public func id(of token: String) -> Int32? {
        idByString[token]
    }

    /// Whether `id` is a special token (control or user-defined: matched and decoded verbatim).
    public func isSpecial(_ id: Int32) -> Bool {
        id >= 0 && Int(id) < vocabSize && special[Int(id)]
    }

    // MARK: - Encoding

    /// Per-call working memory.
    private struct Scratch {
        var segment = SegmentScratch()
        var merge = MergeScratch()
        func release() { segment.release(); merge.release() }
    }

    /// Longest stretch handed to the pre-tokenizer at once; longer text is cut at a safe point.
    private static let chunkBytes = 1 << 16

    /// Token ids of `text`.
    ///
    /// - Parameters:
    ///   - addSpecialTokens: add BOS / EOS as `addBOS` / `addEOS` say (Hugging Face's
    ///     `add_special_tokens`).
    ///   - parseSpecialTokens: find special tokens' text in `text` (as Hugging Face does); false
    ///     treats "<|im_end|>" in user data as ordinary text.
    public func encode(_ text: String, addSpecialTokens: Bool = false, parseSpecialTokens: Bool = true) -> [Int32] {
        var out = [Int32]()
        out.reserveCapacity(text.utf8.count / 3 + 2)
        if addSpecialTokens && addBOS, let bos = bosTokenID { out.append(bos) }
        var text = text
        text.withUTF8 { buf in
            guard let base = buf.baseAddress, buf.count > 0 else { return }
            var scratch = Scratch()
            defer { scratch.release() }
            var segmentStart = 0
            if parseSpecialTokens && !specials.isEmpty {
                var i = 0
                while i < buf.count {
                    if specials.startsToken[Int(base[i])], let match = specials.longestMatch(base + i, buf.count - i) {
                        encodeText(base + segmentStart, i - segmentStart, &scratch, &out)
                        out.append(match.id)
                        i += match.length
                        segmentStart = i
                    } else {
                        i += 1
                    }
                }
            }
            encodeText(base + segmentStart, buf.count - segmentStart, &scratch, &out)
        }
        if addSpecialTokens && addEOS, let eos = eosTokenID { out.append(eos) }
        return out
    }

    /// Encodes text holding no special token, in chunks of about `chunkBytes`.
    private func encodeText(_ p: UnsafePointer<UInt8>, _ n: Int, _ scratch: inout Scratch, _ out: inout [Int32]) {
        var start = 0
        while n - start > BPETokenizer.chunkBytes {
            // Cut before a space between two ASCII letters: every kind's regex ends a word there.
            var cut = start + BPETokenizer.chunkBytes
            while cut < n - 1 && !(p[cut] == 0x20 && isASCIILetter(p[cut - 1]) && isASCIILetter(p[cut + 1])) {
                cut += 1
            }
            if cut >= n - 1 { break }
            encodeSegment(p + start, cut - start, &scratch, &out)
            start = cut
        }
        encodeSegment(p + start, n - start, &scratch, &out)
    }

    @inline(__always)
    private func isASCIILetter(_ b: UInt8) -> Bool {
        (b | 0x20) >= 0x61 && (b | 0x20) <= 0x7A
    }

    /// Pre-tokenizes and merges one stretch of text.
    private func encodeSegment(_ p: UnsafePointer<UInt8>, _ n: Int, _ scratch: inout Scratch, _ out: inout [Int32]) {
        guard n > 0 else { return }
        if normalizesNFC && (0..<n).contains(where: { p[$0] >= 0x80 }) {
            var normalized = String(decoding: UnsafeBufferPointer(start: p, count: n), as: UTF8.self)
                .precomposedStringWithCanonicalMapping
            normalized.withUTF8 { buf in
                guard let base = buf.baseAddress else { return }
                encodeSplit(base, buf.count, &scratch, &out)
            }
            return
        }
        encodeSplit(p, n, &scratch, &out)
    }

    private func encodeSplit(_ p: UnsafePointer<UInt8>, _ n: Int, _ scratch: inout Scratch, _ out: inout [Int32]) {
        let scalars = PreTokenizer.scan(p, count: n, into: &scratch.segment)
        let pieces = PreTokenizer.split(preTokenizer, count: scalars, scratch.segment)
        let ends = scratch.segment.ends, offset = scratch.segment.offset
        var start = 0
        for k in 0..<pieces {
            let end = Int(ends[k])
            let a = Int(offset[start]), b = Int(offset[end])
            start = end
            encodeWord(p + a, b - a, &scratch.merge, &out)
        }
    }

    @inline(__always)
    private func encodeWord(_ p: UnsafePointer<UInt8>, _ n: Int, _ scratch: inout MergeScratch, _ out: inout [Int32]) {
        if n == 1 {
            let id = byteTokens[Int(p[0])]
            if id >= 0 { out.append(id) }
            return
        }
        let id = words.lookup(p, n, arena: arena, offsets: offsets)
        if id >= 0 {
            out.append(id)
            return
        }
        BPEMerge.merge(p, n, byteTokens: byteTokens, pairs: pairs, scratch: &scratch, into: &out)
    }

    /// The words the pre-tokenizer cuts `text` into (special tokens not treated apart).
    public func preTokenize(_ text: String) -> [String] {
        PreTokenizer.pieces(text, kind: preTokenizer)
    }

    // MARK: - Decoding

    /// The bytes that `ids` spell; special tokens give their text unless `skipSpecialTokens`.
    /// Ids outside the vocabulary are skipped.
    public func decodeBytes(_ ids: [Int32], skipSpecialTokens: Bool = false) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(ids.count * 4)
        for id in ids where id >= 0 && Int(id) < vocabSize {
            if skipSpecialTokens && special[Int(id)] { continue }
            let a = Int(offsets[Int(id)]), b = Int(offsets[Int(id) + 1])
            out.append(contentsOf: UnsafeBufferPointer(start: arena + a, count: b - a))
        }
        return out
    }

    /// The text that `ids` spell; byte sequences that are not valid UTF-8 (a token sequence cut
    /// inside a character) become U+FFFD.
    public func decode(_ ids: [Int32], skipSpecialTokens: Bool = false) -> String {
        String(decoding: decodeBytes(ids, skipSpecialTokens: skipSpecialTokens), as: UTF8.self)
    }
}
