// From a record to token ids and a loss mask.
//
// Each format is rendered to one text plus the UTF-8 byte ranges of it that carry loss:
//   text                 the text; all of it
//   prompt_completion    prompt + completion, concatenated with nothing between; the completion
//                        (or, with `promptCompletionUsesTemplate`, a user + assistant chat)
//   chat                 the chat template's rendering; each assistant turn's content and its
//                        end-of-turn text (AssistantSpans.swift)
//   instruction          a chat of user (instruction, "\n\n", input) and assistant (output)
// The text is tokenized once (special tokens' text parsed, as Hugging Face does), each token's
// byte range comes from the lengths of the bytes it spells, and a token carries loss when its
// bytes overlap a loss range. Text and plain prompt/completion also get the tokenizer's BOS in
// front when it adds one (not trained: nothing predicts it) and EOS after (trained: the model
// learns to stop); a chat template places its own special tokens.

import DTrainTemplates
import Foundation

/// How records become tokens.
public struct EncoderOptions: Sendable, Equatable {
    /// Every token carries loss, prompts and user turns included.
    public var trainOnInputs: Bool
    /// Render prompt/completion records through the chat template (a user and an assistant
    /// message) instead of concatenating them.
    public var promptCompletionUsesTemplate: Bool
    /// Put EOS (trained) after text and plain prompt/completion examples.
    public var appendEOS: Bool
    /// Put BOS before text and plain prompt/completion examples; nil follows the tokenizer
    /// (`BPETokenizer.addBOS`).
    public var addBOS: Bool?

    public init(trainOnInputs: Bool = false, promptCompletionUsesTemplate: Bool = false, appendEOS: Bool = true,
                addBOS: Bool? = nil) {
        self.trainOnInputs = trainOnInputs
        self.promptCompletionUsesTemplate = promptCompletionUsesTemplate
        self.appendEOS = appendEOS
        self.addBOS = addBOS
    }
}

/// A record rendered to text, with the byte ranges of the text that carry loss.
public struct RenderedRecord: Sendable, Equatable {
    /// The text that is tokenized.
    public var text: String
    /// UTF-8 byte ranges of `text` whose tokens carry loss, ascending and disjoint.
    public var lossSpans: [Range<Int>]
    /// A BOS token goes before the text's tokens (never trained).
    public var prependBOS: Bool
    /// An EOS token goes after the text's tokens (trained unless the mask is omitted).
    public var appendEOS: Bool
}

/// One training example: token ids and, per token, whether it carries loss.
public struct TokenizedExample: Sendable, Equatable {
    /// Token ids.
    public var ids: [Int32]
    /// Same length as `ids`: 1 when token t is a target (the loss of predicting `ids[t]` from
    /// `ids[..<t]` counts), 0 when it is context only. `lossMask[0]` never matters: nothing
    /// predicts the first token.
    public var lossMask: [UInt8]
    /// The rendered text the ids spell (without the BOS / EOS the encoder adds).
    public var text: String
    public var format: RecordFormat

    public init(ids: [Int32], lossMask: [UInt8], text: String, format: RecordFormat) {
        precondition(ids.count == lossMask.count, "ids and lossMask differ in length")
        self.ids = ids
        self.lossMask = lossMask
        self.text = text
        self.format = format
    }

    /// Tokens that carry loss.
    public var lossTokenCount: Int { lossMask.reduce(0) { $0 + Int($1) } }
}

/// Chat or instruction records (or prompt/completion rendered through the template) with no
/// chat template to render them: a setup error, not a bad record.
public struct NoChatTemplateError: Error, Sendable, CustomStringConvertible {
    public let format: RecordFormat
    public var description: String {
        "\(format) records are rendered with a chat template, but there is none; HINT: set data.chat_template (--chat-template FILE for the data commands and eval) "
            + "to a .jinja file or a tokenizer_config.json, or use a model whose files carry one"
    }
}

/// Renders and tokenizes records with one tokenizer and chat template.
///
/// Immutable; `encode` may run on several threads at once if the chat template's `render` may.
public final class ExampleEncoder: @unchecked Sendable {
    public let tokenizer: BPETokenizer
    public let template: ChatTemplateContext?
    public let options: EncoderOptions
    /// Bytes spelled by each token id.
    private let tokenLengths: [Int32]

    public init(tokenizer: BPETokenizer, template: ChatTemplateContext?, options: EncoderOptions = EncoderOptions()) {
        self.tokenizer = tokenizer
        self.template = template
        self.options = options
        var lengths = [Int32](repeating: 0, count: tokenizer.vocabSize)
        for id in 0..<tokenizer.vocabSize {
            lengths[id] = Int32(tokenizer.decodeBytes([Int32(id)]).count)
        }
        self.tokenLengths = lengths
    }

    /// Whether records of `format` need the chat template.
    public func needsTemplate(_ format: RecordFormat) -> Bool {
        switch format {
        case .text: return false
        case .promptCompletion: return options.promptCompletionUsesTemplate
        case .chat, .instruction: return true
        }
    }

    /// Renders `record`.
    ///
    /// With `addGenerationPrompt`, the text is what a model would be asked to continue: a chat
    /// rendered with the template's generation prompt, an instruction's user message only, a
    /// prompt/completion's prompt only; `lossSpans` is empty.
    ///
    /// - Throws: `RecordProblem` (the template rejected the conversation, a chat without an
    ///   assistant message, ...), `NoChatTemplateError`.
    /// With `allowNoLoss`, a conversation without an assistant message renders with no loss span
    /// instead of being rejected (for looking at data, not for training on it).
    public func render(_ record: DataRecord, addGenerationPrompt: Bool = false, allowNoLoss: Bool = false) throws -> RenderedRecord {
        let record = tokenizer.normalizesNFC ? ExampleEncoder.nfc(record) : record
        let plainBOS = (options.addBOS ?? tokenizer.addBOS) && tokenizer.bosTokenID != nil
        let plainEOS = options.appendEOS && tokenizer.eosTokenID != nil && !addGenerationPrompt
        switch record {
        case .text(let t):
            return RenderedRecord(text: t, lossSpans: addGenerationPrompt ? [] : [0..<t.utf8.count],
                                  prependBOS: plainBOS, appendEOS: plainEOS)
        case .promptCompletion(let prompt, let completion) where !options.promptCompletionUsesTemplate:
            if addGenerationPrompt {
                return RenderedRecord(text: prompt, lossSpans: [], prependBOS: plainBOS, appendEOS: false)
            }
            let text = prompt + completion
            let spans = options.trainOnInputs ? [0..<text.utf8.count] : [prompt.utf8.count..<text.utf8.count]
            return RenderedRecord(text: text, lossSpans: spans, prependBOS: plainBOS, appendEOS: plainEOS)
        default:
            guard let template else { throw NoChatTemplateError(format: record.format) }
            var turns = record.chatTurns ?? []
            if addGenerationPrompt {
                if record.format != .chat { turns.removeLast() }  // the assistant's answer
                let text = try template.render(turns, addGenerationPrompt: true)
                return RenderedRecord(text: text, lossSpans: [], prependBOS: false, appendEOS: false)
            }
            if options.trainOnInputs {
                // Everything but tool results (what a tool returned is not the model's to learn).
                guard turns.contains(where: { ChatTurn.toolRoles.contains($0.role) }) else {
                    let text = try template.render(turns, addGenerationPrompt: false)
                    return RenderedRecord(text: text, lossSpans: [0..<text.utf8.count], prependBOS: false, appendEOS: false)
                }
                let tools = try AssistantSpans.locate(turns, template: template, roles: ChatTurn.toolRoles)
                var spans = [Range<Int>](), at = 0
                for t in tools.spans {
                    if t.lowerBound > at { spans.append(at..<t.lowerBound) }
                    at = max(at, t.upperBound)
                }
                if at < tools.text.utf8.count { spans.append(at..<tools.text.utf8.count) }
                return RenderedRecord(text: tools.text, lossSpans: spans, prependBOS: false, appendEOS: false)
            }
            guard turns.contains(where: { $0.role == "assistant" }) else {
                // Nothing to train on; shown as it is only when asked (dtrain data render).
                guard allowNoLoss else { throw RecordProblem.noAssistantMessage }
                let text = try template.render(turns, addGenerationPrompt: false)
                return RenderedRecord(text: text, lossSpans: [], prependBOS: false, appendEOS: false)
            }
            let located = try AssistantSpans.locate(turns, template: template)
            return RenderedRecord(text: located.text, lossSpans: located.spans, prependBOS: false, appendEOS: false)
        }
    }

    /// Renders and tokenizes `record`.
    ///
    /// - Throws: `RecordProblem`, `NoChatTemplateError`.
    public func encode(_ record: DataRecord) throws -> TokenizedExample {
        try tokenize(try render(record), format: record.format)
    }

    /// Tokenizes a rendered record, marking the tokens whose bytes overlap a loss span.
    ///
    /// - Throws: `RecordProblem.tokenOffsetsMismatch` when the tokens do not spell the text.
    public func tokenize(_ rendered: RenderedRecord, format: RecordFormat) throws -> TokenizedExample {
        let body = tokenizer.encode(rendered.text, addSpecialTokens: false, parseSpecialTokens: true)
        var ids = [Int32]()
        var mask = [UInt8]()
        let extra = (rendered.prependBOS ? 1 : 0) + (rendered.appendEOS ? 1 : 0)
        ids.reserveCapacity(body.count + extra)
        mask.reserveCapacity(body.count + extra)
        if rendered.prependBOS, let bos = tokenizer.bosTokenID {
            ids.append(bos)
            mask.append(0)
        }
        let spans = rendered.lossSpans
        var s = 0
        var offset = 0
        tokenLengths.withUnsafeBufferPointer { lengths in
            for id in body {
                let start = offset
                offset += Int(lengths[Int(id)])
                while s < spans.count && spans[s].upperBound <= start { s += 1 }
                let trained = s < spans.count && spans[s].lowerBound < offset && offset > start
                ids.append(id)
                mask.append(trained ? 1 : 0)
            }
        }
        let textBytes = rendered.text.utf8.count
        guard offset == textBytes else {
            throw RecordProblem.tokenOffsetsMismatch(textBytes: textBytes, tokenBytes: offset)
        }
        if rendered.appendEOS, let eos = tokenizer.eosTokenID {
            ids.append(eos)
            mask.append(1)
        }
        return TokenizedExample(ids: ids, lossMask: mask, text: rendered.text, format: format)
    }

    /// The record with every string in Unicode NFC, so that a tokenizer that normalizes to NFC
    /// leaves the bytes (and so the loss spans) as they are.
    static func nfc(_ record: DataRecord) -> DataRecord {
        func n(_ s: String) -> String {
            s.utf8.allSatisfy { $0 < 0x80 } ? s : s.precomposedStringWithCanonicalMapping
        }
        switch record {
        case .text(let t): return .text(n(t))
        case .promptCompletion(let p, let c): return .promptCompletion(prompt: n(p), completion: n(c))
        case .chat(let turns): return .chat(turns.map { ChatTurn(role: $0.role, content: n($0.content)) })
        case .instruction(let i, let input, let o): return .instruction(instruction: n(i), input: n(input), output: n(o))
        }
    }
}
