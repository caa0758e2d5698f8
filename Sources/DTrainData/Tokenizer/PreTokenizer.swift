// Pre-tokenization: the regex split that cuts text into words before BPE runs on each word.
//
// Each kind's regex is run here by a hand-written scanner over the text's Unicode scalars, each
// scalar first put into one of six classes. The scanners reproduce leftmost-first alternation with
// greedy quantifiers exactly, including the `\s+(?!\S)` lookahead (a run of whitespace gives up its
// last scalar to the word that follows it, unless the run ends the text).
//
// Classes: \p{L} = general category Lu Ll Lt Lm Lo; \p{N} = Nd Nl No; \s = the Unicode White_Space
// property (what Oniguruma, used by Hugging Face tokenizers, and llama.cpp both use). Marks (Mn Mc
// Me), symbols, punctuation, controls and format characters (ZWJ, U+200B) are none of these.
// Scalars assigned after Unicode 16.0 count as unassigned (other): the Oniguruma in Hugging Face
// tokenizers has Unicode 16 tables, and the Swift runtime's newer ones would otherwise classify
// the ~4,700 scalars of Unicode 17 differently (checked over all of U+0000...U+10FFFF).

import Foundation

/// The regex split a byte-level BPE tokenizer applies before merging, named after GGUF's
/// `tokenizer.ggml.pre` values.
public enum PreTokenizerKind: Sendable, Equatable, CaseIterable, CustomStringConvertible {
    /// GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
    case gpt2
    /// Llama 3 (GGUF `llama-bpe`): case-insensitive contractions, an optional non-letter before a
    /// letter run, digits in groups of at most 3, punctuation runs that keep trailing newlines,
    /// newline-ending whitespace runs.
    case llama3
    /// SmolLM / StarCoder: every digit (\p{N}) on its own, then GPT-2's regex on what lies between.
    case smollm
    /// Qwen2: Llama 3's regex with single digits.
    case qwen2

    /// What an absent or `default` GGUF `tokenizer.ggml.pre` means here: GPT-2's split.
    public static let `default`: PreTokenizerKind = .gpt2

    /// GGUF `tokenizer.ggml.pre` values accepted by `init(ggufName:)`, with the kind each selects.
    public static let ggufNames: [(name: String, kind: PreTokenizerKind)] = [
        ("default", .gpt2), ("gpt2", .gpt2), ("gpt-2", .gpt2), ("phi-2", .gpt2), ("olmo", .gpt2), ("jais", .gpt2),
        ("llama-bpe", .llama3), ("llama3", .llama3), ("llama-v3", .llama3), ("falcon3", .llama3),
        ("falcon-h1", .llama3), ("pixtral", .llama3),
        ("smollm", .smollm), ("starcoder", .smollm), ("refact", .smollm), ("command-r", .smollm),
        ("codeshell", .smollm), ("exaone", .smollm), ("minerva-7b", .smollm),
        ("qwen2", .qwen2), ("deepseek-r1-qwen", .qwen2), ("megrez", .qwen2), ("stablelm2", .qwen2),
    ]

    static var knownGGUFNames: [String] { ggufNames.map(\.name) }

    /// The kind a GGUF `tokenizer.ggml.pre` value names.
    /// - Throws: `TokenizerError.unknownPreTokenizer` for a name not in `ggufNames`.
    public init(ggufName: String) throws {
        guard let entry = Self.ggufNames.first(where: { $0.name == ggufName }) else {
            throw TokenizerError.unknownPreTokenizer(name: ggufName)
        }
        self = entry.kind
    }

    /// The `tokenizer.ggml.pre` value written for this kind.
    public var ggufName: String {
        switch self {
        case .gpt2: return "gpt2"
        case .llama3: return "llama-bpe"
        case .smollm: return "smollm"
        case .qwen2: return "qwen2"
        }
    }

    public var description: String { ggufName }

    /// Whether a word already in the vocabulary is emitted whole, skipping the merges (Llama 3's
    /// `ignore_merges`, as in its tokenizer.json and llama.cpp).
    var ignoresMergesByDefault: Bool { self == .llama3 }

    /// Whether models of this kind add BOS when their files do not say (llama.cpp's default).
    public var addsBOSByDefault: Bool { self == .llama3 }

    /// The Hugging Face `Split` regex of this kind (GPT-2's is ByteLevel's built-in one).
    public static func splitPattern(_ kind: PreTokenizerKind) -> String {
        switch kind {
        case .gpt2, .smollm:
            return #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
        case .llama3:
            return #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
        case .qwen2:
            return #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
        }
    }
}

// MARK: - Scalar classes

/// Scalar classes; every value >= `space` is whitespace.
enum ScalarClass {
    static let letter: UInt8 = 0
    static let number: UInt8 = 1
    static let other: UInt8 = 2
    static let space: UInt8 = 3     // U+0020 only: the ` ?` in the regexes
    static let newline: UInt8 = 4   // \r or \n
    static let whitespace: UInt8 = 5

    /// Newest Unicode version whose letters and numbers are classified as such.
    static let unicodeVersion = (major: 16, minor: 0)

    /// Marker in `SegmentScratch.ascii` for U+017F LATIN SMALL LETTER LONG S, which case-folds to 's'.
    static let longS: UInt8 = 0x80

    static func classify(_ scalar: Unicode.Scalar) -> UInt8 {
        switch scalar.value {
        case 0x20: return space
        case 0x0A, 0x0D: return newline
        default: break
        }
        let props = scalar.properties
        if props.isWhitespace { return whitespace }
        if let age = props.age, age.major > unicodeVersion.major
            || (age.major == unicodeVersion.major && age.minor > unicodeVersion.minor) {
            return other
        }
        switch props.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return letter
        case .decimalNumber, .letterNumber, .otherNumber: return number
        default: return other
        }
    }

    /// Classes of U+0000...U+FFFF (surrogates: other), built once.
    static let bmp: [UInt8] = {
        var table = [UInt8](repeating: other, count: 0x10000)
        for v in 0..<0x10000 {
            if let s = Unicode.Scalar(UInt32(v)) { table[v] = classify(s) }
        }
        return table
    }()
}

// MARK: - Working memory

/// Per-call working memory for one text segment: one entry per Unicode scalar.
struct SegmentScratch {
    private(set) var capacity = 0
    /// Class of each scalar (`ScalarClass`).
    var cls: UnsafeMutablePointer<UInt8>
    /// The scalar's value when ASCII, `ScalarClass.longS` for U+017F, else 0 (for contractions).
    var ascii: UnsafeMutablePointer<UInt8>
    /// Byte offset of each scalar in the segment, plus the segment's length at index `count`.
    var offset: UnsafeMutablePointer<Int32>
    /// End scalar index of each piece, written by the splitters.
    var ends: UnsafeMutablePointer<Int32>

    init() {
        cls = .allocate(capacity: 1); ascii = .allocate(capacity: 1)
        offset = .allocate(capacity: 2); ends = .allocate(capacity: 1)
    }

    /// Makes room for `n` scalars.
    mutating func reserve(_ n: Int) {
        guard n > capacity else { return }
        release()
        let c = max(n, 2 * capacity, 256)
        cls = .allocate(capacity: c); ascii = .allocate(capacity: c)
        offset = .allocate(capacity: c + 1); ends = .allocate(capacity: c)
        capacity = c
    }

    func release() {
        cls.deallocate(); ascii.deallocate(); offset.deallocate(); ends.deallocate()
    }
}

// MARK: - Splitting

enum PreTokenizer {
    /// Decodes the UTF-8 `bytes` (valid, as a Swift String's are) into classes, ASCII values and
    /// offsets in `s`, and returns the number of scalars.
    static func scan(_ bytes: UnsafePointer<UInt8>, count: Int, into s: inout SegmentScratch) -> Int {
        s.reserve(count)
        let cls = s.cls, ascii = s.ascii, offset = s.offset
        return ScalarClass.bmp.withUnsafeBufferPointer { bmp -> Int in
            var i = 0, n = 0
            while i < count {
                let b0 = bytes[i]
                offset[n] = Int32(truncatingIfNeeded: i)
                if b0 < 0x80 {
                    cls[n] = bmp[Int(b0)]
                    ascii[n] = b0
                    i += 1
                } else {
                    var v: UInt32
                    if b0 < 0xE0 {
                        v = UInt32(b0 & 0x1F) << 6 | UInt32(bytes[i + 1] & 0x3F)
                        i += 2
                    } else if b0 < 0xF0 {
                        v = UInt32(b0 & 0x0F) << 12 | UInt32(bytes[i + 1] & 0x3F) << 6 | UInt32(bytes[i + 2] & 0x3F)
                        i += 3
                    } else {
                        v = UInt32(b0 & 0x07) << 18 | UInt32(bytes[i + 1] & 0x3F) << 12
                        v |= UInt32(bytes[i + 2] & 0x3F) << 6 | UInt32(bytes[i + 3] & 0x3F)
                        i += 4
                    }
                    if v < 0x10000 {
                        cls[n] = bmp[Int(v)]
                    } else {
                        cls[n] = Unicode.Scalar(v).map(ScalarClass.classify) ?? ScalarClass.other
                    }
                    ascii[n] = v == 0x17F ? ScalarClass.longS : 0
                }
                n += 1
            }
            offset[n] = Int32(truncatingIfNeeded: count)
            return n
        }
    }

    /// Splits scalars `0..<n` of `s` into pieces; writes each piece's end index to `s.ends` and
    /// returns the number of pieces.
    static func split(_ kind: PreTokenizerKind, count n: Int, _ s: SegmentScratch) -> Int {
        switch kind {
        case .gpt2:
            return splitGPT2(s, from: 0, to: n, pieces: 0)
        case .smollm:
            // `\p{N}` first: each number scalar is a piece; GPT-2's regex runs on the rest.
            var pieces = 0, start = 0, i = 0
            while i < n {
                if s.cls[i] == ScalarClass.number {
                    pieces = splitGPT2(s, from: start, to: i, pieces: pieces)
                    s.ends[pieces] = Int32(i + 1)
                    pieces += 1
                    start = i + 1
                }
                i += 1
            }
            return splitGPT2(s, from: start, to: n, pieces: pieces)
        case .llama3:
            return splitLlama3(s, from: 0, to: n, maxDigits: 3)
        case .qwen2:
            return splitLlama3(s, from: 0, to: n, maxDigits: 1)
        }
    }

    /// Length of the contraction ('s 't 're 've 'm 'll 'd) at `i`, or 0. `s.ascii[i]` is an apostrophe.
    @inline(__always)
    private static func contraction(_ s: SegmentScratch, _ i: Int, _ end: Int, caseInsensitive: Bool) -> Int {
        guard i + 1 < end else { return 0 }
        @inline(__always) func fold(_ c: UInt8) -> UInt8 {
            guard caseInsensitive else { return c }
            if c == ScalarClass.longS { return UInt8(ascii: "s") }
            return (c >= 0x41 && c <= 0x5A) ? c | 0x20 : c
        }
        switch fold(s.ascii[i + 1]) {
        case UInt8(ascii: "s"), UInt8(ascii: "t"), UInt8(ascii: "m"), UInt8(ascii: "d"):
            return 2
        case UInt8(ascii: "r"), UInt8(ascii: "v"):
            return i + 2 < end && fold(s.ascii[i + 2]) == UInt8(ascii: "e") ? 3 : 0
        case UInt8(ascii: "l"):
            return i + 2 < end && fold(s.ascii[i + 2]) == UInt8(ascii: "l") ? 3 : 0
        default:
            return 0
        }
    }

    /// End of the `\s+(?!\S)|\s+` match at whitespace scalar `i`, given `run`, the end of the
    /// whitespace run that starts at `i`.
    @inline(__always)
    private static func whitespaceMatchEnd(_ i: Int, run: Int, end: Int) -> Int {
        if run == end { return end }    // trailing whitespace: all of it
        if run - i >= 2 { return run - 1 }   // leave the last one to prefix the next word
        return run                      // a lone whitespace before a non-space: `\s+`
    }

    /// GPT-2's regex over scalars `from..<to`, appending piece ends after `pieces` existing ones.
    private static func splitGPT2(_ s: SegmentScratch, from: Int, to end: Int, pieces: Int) -> Int {
        let cls = s.cls, ascii = s.ascii, ends = s.ends
        var count = pieces
        var i = from
        while i < end {
            let c = cls[i]
            var j: Int
            let contractionLength = ascii[i] == 0x27 ? contraction(s, i, end, caseInsensitive: false) : 0
            if contractionLength > 0 {
                j = i + contractionLength
            } else {
                // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: one class, optionally after one space.
                var k = i
                if c == ScalarClass.space && i + 1 < end && cls[i + 1] <= ScalarClass.other { k = i + 1 }
                let ck = cls[k]
                if ck <= ScalarClass.other {
                    j = k + 1
                    while j < end && cls[j] == ck { j += 1 }
                } else {
                    var run = i + 1
                    while run < end && cls[run] >= ScalarClass.space { run += 1 }
                    j = whitespaceMatchEnd(i, run: run, end: end)
                }
            }
            ends[count] = Int32(truncatingIfNeeded: j)
            count += 1
            i = j
        }
        return count
    }

    /// Llama 3's regex (or Qwen2's, with `maxDigits` 1) over scalars `from..<to`.
    private static func splitLlama3(_ s: SegmentScratch, from: Int, to end: Int, maxDigits: Int) -> Int {
        let cls = s.cls, ascii = s.ascii, ends = s.ends
        var count = 0
        var i = from
        while i < end {
            let c = cls[i]
            var j: Int
            let contractionLength = ascii[i] == 0x27 ? contraction(s, i, end, caseInsensitive: true) : 0
            if contractionLength > 0 {
                // (?i:'s|'t|'re|'ve|'m|'ll|'d)
                j = i + contractionLength
            } else if c == ScalarClass.letter
                        || (c != ScalarClass.newline && c != ScalarClass.number
                            && i + 1 < end && cls[i + 1] == ScalarClass.letter) {
                // [^\r\n\p{L}\p{N}]?\p{L}+
                j = i + 1
                while j < end && cls[j] == ScalarClass.letter { j += 1 }
            } else if c == ScalarClass.number {
                // \p{N}{1,maxDigits}
                j = i + 1
                let limit = min(end, i + maxDigits)
                while j < limit && cls[j] == ScalarClass.number { j += 1 }
            } else if c == ScalarClass.other
                        || (c == ScalarClass.space && i + 1 < end && cls[i + 1] == ScalarClass.other) {
                // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
                j = c == ScalarClass.space ? i + 2 : i + 1
                while j < end && cls[j] == ScalarClass.other { j += 1 }
                while j < end && cls[j] == ScalarClass.newline { j += 1 }
            } else {
                // Whitespace: `\s*[\r\n]+` (up to the run's last newline), else `\s+(?!\S)|\s+`.
                var run = i + 1
                while run < end && cls[run] >= ScalarClass.space { run += 1 }
                var lastNewline = run - 1
                while lastNewline >= i && cls[lastNewline] != ScalarClass.newline { lastNewline -= 1 }
                j = lastNewline >= i ? lastNewline + 1 : whitespaceMatchEnd(i, run: run, end: end)
            }
            ends[count] = Int32(truncatingIfNeeded: j)
            count += 1
            i = j
        }
        return count
    }

    /// The pieces `kind` cuts `text` into (no special-token handling): for tests and inspection.
    static func pieces(_ text: String, kind: PreTokenizerKind) -> [String] {
        var text = text
        return text.withUTF8 { buf -> [String] in
            guard let base = buf.baseAddress, buf.count > 0 else { return [] }
            var s = SegmentScratch()
            defer { s.release() }
            let n = scan(base, count: buf.count, into: &s)
            let m = split(kind, count: n, s)
            var out = [String]()
            var start = 0
            for p in 0..<m {
                let e = Int(s.ends[p])
                let a = Int(s.offset[start]), b = Int(s.offset[e])
                out.append(String(decoding: UnsafeBufferPointer(start: base + a, count: b - a), as: UTF8.self))
                start = e
            }
            return out
        }
    }
}
