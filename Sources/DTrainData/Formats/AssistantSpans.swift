// Finding the assistant turns in a rendered conversation, as UTF-8 byte ranges of the rendered
// text, so that exactly their tokens carry loss.
//
// Method (one extra render for a conversation whose only assistant message is its last message):
//   F = render(messages)                       the text that is trained on
//   S = render(messages, assistant k's content replaced by a marker "\u{F8F0}k\u{F8F1}")
// S splits at its markers into template text T_0 M_0 T_1 M_1 ... T_A, and F must read
// T_0 C_0 T_1 C_1 ... T_A, where C_k is assistant k's content as the template printed it (verbatim,
// or trimmed as Llama 3 does: the candidates tried are the content, then stripped, lstripped, rstripped;
// failing those, C_k is whatever lies between T_k and the next T_{k+1}). That gives each
// content's exact bytes in F, whatever the template puts around it (a default system prompt, a
// date header, a BOS, a space before the content) and wherever the message sits (first, between
// two users).
// The end of assistant k's turn comes from rendering the conversation up to and including it,
// S_k = render(messages[...k] with markers): S_k is a prefix of S, and the template text between
// marker k and the end of S_k is the turn's closing text ("<|im_end|>\n", "<|eot_id|>", "</s>",
// "</s>\n"). That text, less trailing whitespace, is trained too: the model learns to end its turn.
// When assistant k is the last message, S_k is S itself and costs no render.
//
// Checked against the six reference templates (SmolLM2 ChatML, Llama 3, Llama 3.1, Mistral v0.2,
// Qwen2.5, zephyr) in Tests/DTrainDataTests/FormatAssistantSpanTests.swift.

import Foundation

/// Locates assistant turns in rendered conversations.
public enum AssistantSpans {
    /// The marker that stands for assistant message `k` while locating it.
    static func marker(_ k: Int) -> String { "\u{F8F0}\(k)\u{F8F1}" }
    private static let markerOpen: [UInt8] = [0xEF, 0xA3, 0xB0]   // U+F8F0
    private static let markerClose: [UInt8] = [0xEF, 0xA3, 0xB1]  // U+F8F1

    /// The rendered text of `turns` and, for each assistant message in order, the byte range of
    /// its content and closing text (end-of-turn token) in that text.
    /// `roles` picks the messages located (the assistant's, by default; tool results when they
    /// are to be left out of a train_on_inputs span).
    public static func locate(_ turns: [ChatTurn], template: ChatTemplateContext,
                              roles: Set<String> = ["assistant"]) throws -> (text: String, spans: [Range<Int>]) {
        let text = try template.render(turns, addGenerationPrompt: false)
        let chosen = turns.indices.filter { roles.contains(turns[$0].role) }
        // A message without content (an assistant that only calls tools) has no text to mark:
        // its span is what its turn adds to the conversation rendered up to it.
        let prefixSpans = try chosen.filter { turns[$0].contentIsNull }.map { try prefixSpan($0, turns, template, text) }
        let assistants = chosen.filter { !turns[$0].contentIsNull }
        if assistants.isEmpty { return (text, prefixSpans) }
        var marked = turns
        for (k, i) in assistants.enumerated() { marked[i].content = marker(k) }
        let s = Array(try template.render(marked, addGenerationPrompt: false).utf8)
        let f = Array(text.utf8)

        // Markers in S, in order: the template text between them is the same in F.
        let found = findMarkers(s)
        guard found.count == assistants.count, found.enumerated().allSatisfy({ $0.offset == $0.element.k }) else {
            let missing = (0..<assistants.count).first { k in !found.contains { $0.k == k } } ?? 0
            throw RecordProblem.assistantNotFound(index: missing, reason: found.count < assistants.count
                ? "the template does not print it"
                : "the template prints assistant messages out of order or twice, or a message holds the private-use "
                    + "characters U+F8F0/U+F8F1 that mark them while they are located")
        }
        var segments = [Range<Int>]()   // T_0 ... T_A in S
        var prev = 0
        for m in found {
            segments.append(prev..<m.range.lowerBound)
            prev = m.range.upperBound
        }
        segments.append(prev..<s.count)

        // Contents in F.
        guard f.count >= segments[0].count, equal(f, 0, s, segments[0]) else {
            throw RecordProblem.assistantNotFound(index: 0, reason: "the text before it depends on its content")
        }
        var p = segments[0].count
        var contents = [Range<Int>]()
        for k in 0..<assistants.count {
            let next = segments[k + 1]
            let isLast = k + 1 == assistants.count
            var length: Int?
            let raw = Array(turns[assistants[k]].content.utf8)
            func fits(_ candidate: ArraySlice<UInt8>) -> Bool {
                let end = p + candidate.count
                return end + next.count <= f.count && equal(f, p, candidate) && equal(f, end, s, next)
                    && (!isLast || end + next.count == f.count)
            }
            if fits(raw[...]) {
                length = raw.count
            } else {
                for candidate in strippedForms(turns[assistants[k]].content, raw) where fits(candidate) {
                    length = candidate.count
                    break
                }
            }
            if length == nil {
                // The template rewrote the content: take what lies before the next template text.
                if isLast {
                    if f.count - p >= next.count, equal(f, f.count - next.count, s, next) { length = f.count - next.count - p }
                } else if let at = search(f, from: p, s, next) {
                    length = at - p
                }
            }
            guard let length else {
                throw RecordProblem.assistantNotFound(index: k, reason: "the text after it does not match the template's")
            }
            contents.append(p..<(p + length))
            p += length + next.count
        }

        // Closing text of each turn.
        var spans = [Range<Int>]()
        for k in 0..<assistants.count {
            let next = segments[k + 1]
            var closing = 0
            if assistants[k] == turns.count - 1 {
                closing = next.count
            } else if let prefix = try? template.render(Array(marked[...assistants[k]]), addGenerationPrompt: false) {
                let sk = Array(prefix.utf8)
                let markerEnd = found[k].range.upperBound
                if sk.count >= markerEnd, sk.count <= s.count, equal(s, 0, sk[...]) {
                    closing = min(sk.count - markerEnd, next.count)
                }
            }
            if closing == 0, let eos = template.eosToken, !eos.isEmpty {
                let e = Array(eos.utf8)
                if next.count >= e.count && equal(s, next.lowerBound, e[...]) { closing = e.count }
            }
            while closing > 0, isSpace(s[next.lowerBound + closing - 1]) { closing -= 1 }
            spans.append(contents[k].lowerBound..<(contents[k].upperBound + closing))
        }
        return (text, (spans + prefixSpans).sorted { $0.lowerBound < $1.lowerBound })
    }

    /// Message i's span found by prefixes: from the end of the conversation before it rendered
    /// with the generation prompt, to the end of the conversation through it (less trailing
    /// whitespace); both renderings must begin the whole text.
    static func prefixSpan(_ i: Int, _ turns: [ChatTurn], _ template: ChatTemplateContext, _ text: String) throws -> Range<Int> {
        let f = Array(text.utf8)
        let before = Array(try template.render(Array(turns[..<i]), addGenerationPrompt: true).utf8)
        let through = Array(try template.render(Array(turns[...i]), addGenerationPrompt: false).utf8)
        guard before.count <= through.count, through.count <= f.count, f.starts(with: before), f.starts(with: through) else {
            throw RecordProblem.assistantNotFound(index: i, reason: "the text up to its turn changes once later messages follow")
        }
        var end = through.count
        while end > before.count, isSpace(f[end - 1]) { end -= 1 }
        return before.count..<end
    }

    /// The other forms a template may print content in: Python's strip, lstrip and rstrip
    /// (whitespace: White_Space and U+001C...U+001F, as str.isspace), as slices of `raw`, the
    /// content's UTF-8.
    static func strippedForms(_ content: String, _ raw: [UInt8]) -> [ArraySlice<UInt8>] {
        func space(_ u: Unicode.Scalar) -> Bool { u.properties.isWhitespace || (0x1C...0x1F).contains(u.value) }
        let scalars = content.unicodeScalars
        var lead = 0
        for u in scalars {
            guard space(u) else { break }
            lead += u.utf8.count
        }
        var trail = raw.count
        var i = scalars.endIndex
        while i > scalars.startIndex && trail > lead {
            let before = scalars.index(before: i)
            let u = scalars[before]
            guard space(u) else { break }
            trail -= u.utf8.count
            i = before
        }
        if lead == 0 && trail == raw.count { return [] }
        let stripped = lead <= trail ? raw[lead..<trail] : raw[raw.count..<raw.count]
        return [stripped, raw[min(lead, raw.count)...], raw[..<trail]]
    }

    private static func findMarkers(_ s: [UInt8]) -> [(k: Int, range: Range<Int>)] {
        var out = [(k: Int, range: Range<Int>)]()
        var i = 0
        while i + 3 <= s.count {
            guard s[i] == markerOpen[0], s[i + 1] == markerOpen[1], s[i + 2] == markerOpen[2] else { i += 1; continue }
            var j = i + 3
            var k = 0
            while j < s.count, s[j] >= 0x30, s[j] <= 0x39 { k = k * 10 + Int(s[j] - 0x30); j += 1 }
            if j > i + 3, j + 3 <= s.count, s[j] == markerClose[0], s[j + 1] == markerClose[1], s[j + 2] == markerClose[2] {
                out.append((k, i..<(j + 3)))
                i = j + 3
            } else {
                i += 1
            }
        }
        return out
    }

    @inline(__always)
    private static func isSpace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x0A || b == 0x0D || b == 0x09 }

    /// Whether `a[at...]` starts with `b`.
    private static func equal(_ a: [UInt8], _ at: Int, _ b: ArraySlice<UInt8>) -> Bool {
        guard at >= 0, at + b.count <= a.count else { return false }
        if b.isEmpty { return true }
        return a.withUnsafeBufferPointer { pa in
            b.withUnsafeBufferPointer { pb in memcmp(pa.baseAddress! + at, pb.baseAddress!, b.count) == 0 }
        }
    }

    /// Whether `a[at...]` starts with `b[range]`.
    private static func equal(_ a: [UInt8], _ at: Int, _ b: [UInt8], _ range: Range<Int>) -> Bool {
        equal(a, at, b[range])
    }

    /// The first offset >= `from` where `b[range]` occurs in `a`.
    private static func search(_ a: [UInt8], from: Int, _ b: [UInt8], _ range: Range<Int>) -> Int? {
        guard !range.isEmpty else { return from }
        let m = range.count
        guard from + m <= a.count else { return nil }
        let first = b[range.lowerBound]
        var i = from
        while i + m <= a.count {
            if a[i] == first && equal(a, i, b[range]) { return i }
            i += 1
        }
        return nil
    }
}
