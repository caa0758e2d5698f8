import DTrainCore
import DTrainData
import Foundation

/// What ends an answer, and the decoding settings.
public struct GenerationOptions: Sendable {
    public var maxNewTokens: Int
    public var sampling: SamplingSettings
    /// Token ids that end an answer (EOS, the template's end of turn); not part of the text.
    public var stopTokens: Set<Int32>
    /// Strings that end an answer; the text stops before the first one.
    public var stopStrings: [String]

    public init(maxNewTokens: Int, sampling: SamplingSettings, stopTokens: Set<Int32>, stopStrings: [String]) {
        self.maxNewTokens = maxNewTokens; self.sampling = sampling
        self.stopTokens = stopTokens; self.stopStrings = stopStrings
    }
}

/// One generated answer.
public struct GeneratedAnswer: Sendable {
    public enum Finish: String, Sendable {
        /// A stop token was generated (it is in `ids`, not in `text`).
        case stopToken = "stop_token"
        /// A stop string appeared; `text` ends before it.
        case stopString = "stop_string"
        /// max_new_tokens were generated.
        case length
        /// The model's context (its maximum positions) is full.
        case context
    }
    /// The prompt's index in the list given to `generate`, plus `firstIndex`.
    public var index: Int
    /// Generated token ids, a final stop token included.
    public var ids: [Int32]
    public var text: String
    public var finish: Finish
    public var promptTokens: Int
    /// From the start of the prompt's forward pass to the last token.
    public var seconds: Double
    public var tokensPerSecond: Double { seconds > 0 ? Double(ids.count) / seconds : 0 }
}

/// Answers prompts with a KV-cached decoder, several at once: each prompt is run through the
/// model in chunks on its own row, then every unfinished row gets one token per pass, and a
/// finished row takes the next waiting prompt.
public final class TextGenerator {
    public let decoder: KVCacheDecoder
    public let tokenizer: BPETokenizer
    /// Whether a row's next prompt runs only from where it stops matching the tokens the row
    /// already holds (a conversation's earlier turns are computed once), instead of from the
    /// start. Off by default: batched answers then never depend on what a row held before.
    public var reusesCachedPrefix = false
    /// The tokens each row's cache holds, for `reusesCachedPrefix`.
    private var cachedTokens: [[Int32]]
    /// Prompt tokens the last `generate` took from the cache instead of running them.
    public private(set) var reusedPromptTokens = 0

    /// - Parameters: rows: prompts answered at once; context: tokens per row (prompt and answer).
    public init(model: LlamaModel, tokenizer: BPETokenizer, rows: Int, context: Int) {
        decoder = KVCacheDecoder(model: model, rows: rows, context: context)
        self.tokenizer = tokenizer
        cachedTokens = Array(repeating: [], count: rows)
    }

    /// How many of `prompt`'s first tokens row `row` holds already (at most all but the last,
    /// which must run to give the first logits).
    private func reusablePrefix(_ row: Int, _ prompt: [Int32]) -> Int {
        guard reusesCachedPrefix else { return 0 }
        let held = cachedTokens[row], limit = min(held.count, prompt.count - 1)
        var n = 0
        while n < limit && held[n] == prompt[n] { n += 1 }
        return n
    }

    /// One row's answer in progress.
    private struct Slot {
        var index: Int
        var prompt: [Int32]
        var ids: [Int32] = []
        var emittedBytes = 0
        var start: Double
        var finish: GeneratedAnswer.Finish?
        var text = ""
    }

    /// Answers `prompts` (token ids, each at most the decoder's context less one) in order of
    /// index; `onText(index, piece)` receives each answer's text as it grows (whole UTF-8
    /// characters, never a piece that could be the start of a stop string).
    public func generate(_ prompts: [[Int32]], options: GenerationOptions, firstIndex: Int = 0,
                         onText: ((Int, String) -> Void)? = nil) -> [GeneratedAnswer] {
        let V = decoder.model.config.vocabSize, context = decoder.context
        var sampler = TokenSampler(settings: options.sampling, vocabSize: V)
        var slots = [Slot?](repeating: nil, count: decoder.rows)
        var answers = [GeneratedAnswer?](repeating: nil, count: prompts.count)
        var next = 0
        reusedPromptTokens = 0

        func accept(_ row: Int, _ logits: UnsafePointer<Float>) {
            var s = slots[row]!
            let token = sampler.pick(logits, seen: s.prompt + s.ids, sequence: s.index, index: s.ids.count)
            s.ids.append(token)
            if options.stopTokens.contains(token) {
                s.finish = .stopToken
            } else if s.ids.count >= options.maxNewTokens {
                s.finish = .length
            } else if s.prompt.count + s.ids.count >= context {
                s.finish = .context
            }
            updateText(&s, options: options, onText: onText)
            if let finish = s.finish {
                // The cache holds the prompt and every token but the last (which never ran).
                cachedTokens[row] = s.prompt + s.ids.dropLast()
                answers[s.index - firstIndex] = GeneratedAnswer(index: s.index, ids: s.ids, text: s.text, finish: finish,
                                                                promptTokens: s.prompt.count, seconds: now() - s.start)
                slots[row] = nil
            } else {
                slots[row] = s
            }
        }

        while true {
            // Fill free rows with waiting prompts.
            for row in 0..<decoder.rows where slots[row] == nil && next < prompts.count {
                let prompt = prompts[next]
                precondition(!prompt.isEmpty && prompt.count < context, "TextGenerator: prompt \(next) has \(prompt.count) tokens; the context holds \(context)")
                slots[row] = Slot(index: firstIndex + next, prompt: prompt, start: now())
                next += 1
                if options.maxNewTokens == 0 {
                    let s = slots[row]!
                    answers[s.index - firstIndex] = GeneratedAnswer(index: s.index, ids: [], text: "", finish: .length,
                                                                    promptTokens: prompt.count, seconds: 0)
                    slots[row] = nil
                    continue
                }
                var at = reusablePrefix(row, prompt)
                decoder.truncate(row: row, to: at)
                reusedPromptTokens += at
                var logits: UnsafePointer<Float>?
                while at < prompt.count {
                    let n = min(decoder.chunk, prompt.count - at)
                    logits = decoder.append(Array(prompt[at..<(at + n)]), segments: [.init(row: row, count: n)])
                    at += n
                }
                accept(row, logits!)
            }
            let active = (0..<decoder.rows).filter { slots[$0] != nil }
            if active.isEmpty {
                // Every row finished at its first token; take the next prompts, or stop.
                if next < prompts.count { continue }
                break
            }
            let tokens = active.map { slots[$0]!.ids.last! }
            let logits = decoder.append(tokens, segments: active.map { .init(row: $0, count: 1) })
            for (i, row) in active.enumerated() { accept(row, logits + i * V) }
        }
        return answers.map { $0! }
    }

    /// Rebuilds the answer's text from its tokens (a stop token left out, a stop string cut off)
    /// and hands the new part to `onText`.
    private func updateText(_ s: inout Slot, options: GenerationOptions, onText: ((Int, String) -> Void)?) {
        let textIDs = s.finish == .stopToken ? Array(s.ids.dropLast()) : s.ids
        var bytes = tokenizer.decodeBytes(textIDs)
        if s.finish == nil { bytes = Array(bytes[..<Self.completeUTF8Prefix(bytes)]) }
        var text = String(decoding: bytes, as: UTF8.self)
        var shown = text.utf8.count
        if let cut = options.stopStrings.compactMap({ text.range(of: $0)?.lowerBound }).min() {
            text = String(text[..<cut])
            shown = text.utf8.count
            s.finish = .stopString
        } else if s.finish == nil {
            // Hold back a tail that may yet become a stop string.
            let utf8 = Array(text.utf8)
            for stop in options.stopStrings {
                let sb = Array(stop.utf8)
                for k in stride(from: min(sb.count - 1, utf8.count), to: 0, by: -1)
                where utf8.suffix(k).elementsEqual(sb.prefix(k)) {
                    shown = min(shown, utf8.count - k)
                    break
                }
            }
        }
        s.text = text
        if shown > s.emittedBytes, let onText {
            let utf8 = Array(text.utf8)
            onText(s.index, String(decoding: utf8[s.emittedBytes..<shown], as: UTF8.self))
            s.emittedBytes = shown
        }
    }

    /// The length of the longest prefix of `bytes` that does not end inside a UTF-8 character.
    static func completeUTF8Prefix(_ bytes: [UInt8]) -> Int {
        var i = bytes.count
        var back = 0
        while i > 0 && back < 4 && bytes[i - 1] & 0xC0 == 0x80 { i -= 1; back += 1 }
        guard i > 0 else { return bytes.count }
        let lead = bytes[i - 1]
        let need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1
        return need > back + 1 ? i - 1 : bytes.count
    }
}
