import DTrainCore
import DTrainData
import DTrainDistributed
import Foundation

/// A model's answers scored against the records' references: generated and compared as text
/// (exact match, token F1, ROUGE-L, corpus BLEU), or, with a label set, classified by
/// log-likelihood (accuracy, macro-F1, confusion matrix).
public struct TaskScores {
    /// One record's answer.
    public struct Answer {
        public let index: Int
        public let location: RecordLocation
        public let prediction: String
        public let reference: String
    }
    public var answers: [Answer] = []
    public var exactMatch: Double?
    public var tokenF1: Double?
    public var rougeL: Double?
    public var bleu: Double?
    public var accuracy: Double?
    public var macroF1: Double?
    /// confusion[gold][predicted] = records.
    public var confusion: [String: [String: Int]]?

    public init() {}

    /// The metrics of generated answers, as reports and configs name them.
    public static let generationMetrics = ["exact_match", "token_f1", "rouge_l", "bleu"]

    /// The report's keys: exact_match, token_f1, rouge_l, bleu (generation) or accuracy,
    /// macro_f1, confusion (classification); absent ones are left out.
    public var json: [String: Any] {
        var o: [String: Any] = [:]
        if let exactMatch { o["exact_match"] = exactMatch }
        if let tokenF1 { o["token_f1"] = tokenF1 }
        if let rougeL { o["rouge_l"] = rougeL }
        if let bleu { o["bleu"] = bleu }
        if let accuracy { o["accuracy"] = accuracy }
        if let macroF1 { o["macro_f1"] = macroF1 }
        if let confusion { o["confusion"] = confusion }
        return o
    }
}

public enum TaskEvaluation {
    /// Generates an answer to every question that has a reference (greedy, ending at the
    /// model's stop tokens or after `maxNewTokens`) and scores the answers: exact match and
    /// token F1 averaged over records (×100, as the SQuAD script reports), ROUGE-L F averaged
    /// (×100), corpus BLEU (sacreBLEU's 0–100). Under several ranks, each rank answers one
    /// contiguous share of the questions (batched decoding gives each sequence the tokens it
    /// would get alone) and every rank returns all the answers, in order.
    public static func generated(model: LlamaModel, tokenizer: BPETokenizer, questions: [Question], stopTokens: [Int32],
                                 maxNewTokens: Int, batch: Int, comm: Communicator = SingleProcessCommunicator()) throws -> TaskScores {
        let scored = questions.enumerated().filter { $0.element.answer != nil }
        guard !scored.isEmpty else { return TaskScores() }
        let share = (scored.count * comm.rank / comm.worldSize)..<(scored.count * (comm.rank + 1) / comm.worldSize)
        var texts: [String] = []
        if !share.isEmpty {
            let context = min(model.config.maxPositionEmbeddings, scored.map(\.element.prompt.count).max()! + maxNewTokens)
            let generator = TextGenerator(model: model, tokenizer: tokenizer, rows: min(batch, share.count), context: context)
            let options = GenerationOptions(maxNewTokens: maxNewTokens,
                                            sampling: SamplingSettings(temperature: 0, topK: 0, topP: 1, repetitionPenalty: 1, seed: 0),
                                            stopTokens: Set(stopTokens), stopStrings: [])
            texts = generator.generate(scored[share].map(\.element.prompt), options: options, firstIndex: share.lowerBound).map(\.text)
        }
        let all = try comm.allGather(texts).flatMap { $0 }
        var s = TaskScores()
        s.answers = zip(scored, all).map { q, text in
            TaskScores.Answer(index: q.offset, location: q.element.location, prediction: text, reference: q.element.answer!)
        }
        let n = Double(s.answers.count)
        s.exactMatch = 100 * s.answers.reduce(0) { $0 + TaskMetrics.exactMatch($1.prediction, $1.reference) } / n
        s.tokenF1 = 100 * s.answers.reduce(0) { $0 + TaskMetrics.tokenF1($1.prediction, $1.reference) } / n
        s.rougeL = 100 * s.answers.reduce(0) { $0 + TaskMetrics.rougeL($1.prediction, $1.reference) } / n
        s.bleu = TaskMetrics.corpusBLEU(s.answers.map(\.prediction), s.answers.map(\.reference))
        return s
    }

    /// A record whose reference is not one of the labels.
    public struct UnknownLabel: Error, CustomStringConvertible {
        public let location: RecordLocation, gold: String, labels: [String]
        public var description: String {
            "\(location): the reference answer \"\(gold)\" is not one of --labels \(labels.joined(separator: ",")); "
                + "expected the record's completion (trimmed) to be a label"
        }
    }

    /// Classifies every question with a reference by log-likelihood: each label is rendered as
    /// the record's answer (the reference's leading whitespace kept) and encoded as training
    /// encodes it; the prediction is the label whose answer tokens (end of turn or EOS included,
    /// as training counts them) have the highest summed log-probability. The labels' encodings
    /// share the prompt: it runs once into a KV cache that each label's row continues. Under
    /// several ranks each rank classifies a contiguous share of the questions.
    ///
    /// - Throws: `UnknownLabel` for a reference (trimmed) that is not a label.
    public static func classified(model: LlamaModel, encoder: ExampleEncoder, questions: [Question], labels: [String],
                                  comm: Communicator = SingleProcessCommunicator()) throws -> TaskScores {
        let scored = questions.enumerated().filter { $0.element.answer != nil }
        var candidates: [[TokenizedExample]] = []
        for (_, q) in scored {
            let gold = q.answer!.trimmingCharacters(in: .whitespacesAndNewlines)
            guard labels.contains(gold) else { throw UnknownLabel(location: q.location, gold: gold, labels: labels) }
            candidates.append(try labels.map { label in
                guard let record = q.record.replacingAnswer(with: label) else {
                    throw DataConfigError(path: "\(q.location)", message: "the record has no answer to replace with the label \"\(label)\"")
                }
                return try encoder.encode(record)
            })
        }
        var s = TaskScores()
        guard !scored.isEmpty else { return s }
        let share = (scored.count * comm.rank / comm.worldSize)..<(scored.count * (comm.rank + 1) / comm.worldSize)
        var best: [Int] = []
        if !share.isEmpty {
            let scorer = LabelScorer(model: model, labels: labels.count,
                                     context: candidates[share].flatMap { $0 }.map(\.ids.count).max()!)
            best = candidates[share].map { scorer.best(of: $0) }
        }
        let predicted = try comm.allGather(best).flatMap { $0 }
        var confusion: [String: [String: Int]] = [:]
        for (i, (offset, q)) in scored.enumerated() {
            let gold = q.answer!.trimmingCharacters(in: .whitespacesAndNewlines)
            let label = labels[predicted[i]]
            s.answers.append(TaskScores.Answer(index: offset, location: q.location, prediction: label, reference: gold))
            confusion[gold, default: [:]][label, default: 0] += 1
        }
        let n = Double(s.answers.count)
        s.accuracy = 100 * Double(s.answers.filter { $0.prediction == $0.reference }.count) / n
        // Macro-F1 over the labels (a label never gold nor predicted counts as F1 0, as
        // scikit-learn's f1_score(average="macro", labels=...) does).
        var f1s: [Double] = []
        for label in labels {
            let tp = Double(confusion[label]?[label] ?? 0)
            let predicted = Double(s.answers.filter { $0.prediction == label }.count)
            let actual = Double(s.answers.filter { $0.reference == label }.count)
            f1s.append(predicted + actual > 0 ? 2 * tp / (predicted + actual) : 0)
        }
        s.macroF1 = 100 * f1s.reduce(0, +) / Double(labels.count)
        s.confusion = confusion
        return s
    }
}

/// Scores a question's label encodings with one KV cache: the tokens they share (the prompt, up
/// to the first token that carries loss) run once into row 0 and are copied to each label's row,
/// then every label's remaining tokens run in passes of up to `chunk` tokens, and each position
/// that carries loss adds −log p(next token) to its label's sum.
final class LabelScorer {
    let decoder: KVCacheDecoder
    let model: LlamaModel
    let scratch: FloatBuffer
    let headRows = 64
    var rowIndices: [Int32] = [], targets: [Int32] = [], owners: [Int] = []
    let rowLoss: UnsafeMutablePointer<Float>

    init(model: LlamaModel, labels: Int, context: Int) {
        self.model = model
        decoder = KVCacheDecoder(model: model, rows: labels, context: max(2, context))
        let c = model.config
        scratch = FloatBuffer(count: CrossEntropyHead.scratchCount(rowsPerChunk: headRows, C: c.hiddenSize, V: c.vocabSize))
        rowLoss = .allocate(capacity: decoder.chunk)
    }

    deinit { rowLoss.deallocate() }

    /// The index of the candidate whose loss-carrying tokens have the smallest summed negative
    /// log-likelihood (the first of equals).
    func best(of candidates: [TokenizedExample]) -> Int {
        let nll = scores(candidates)
        return nll.indices.min { nll[$0] < nll[$1] }!
    }

    /// Σ −log p over each candidate's tokens that carry loss.
    func scores(_ candidates: [TokenizedExample]) -> [Double] {
        decoder.resetAll()
        // Shared: the common prefix, but never a token that carries loss (its prediction is
        // scored, so the position before it must run in the label's own row).
        var shared = candidates[0].ids.count
        for e in candidates {
            var j = 0
            while j < min(shared, e.ids.count) && e.ids[j] == candidates[0].ids[j] { j += 1 }
            shared = min(shared, j, e.lossMask.firstIndex { $0 != 0 } ?? e.ids.count)
        }
        // Row 0 takes the shared tokens but the last (whose prediction may be scored), in passes.
        let prefix = max(0, shared - 1)
        var at = 0
        while at < prefix {
            let n = min(decoder.chunk, prefix - at)
            _ = decoder.append(Array(candidates[0].ids[at..<(at + n)]), segments: [.init(row: 0, count: n)])
            at += n
        }
        for l in 1..<candidates.count where prefix > 0 { decoder.copyPrefix(from: 0, to: l, count: prefix) }
        // Each label's row continues from `prefix`: feeding token j yields the prediction of j + 1.
        var next = [Int](repeating: prefix, count: candidates.count)
        var nll = [Double](repeating: 0, count: candidates.count)
        while true {
            var tokens: [Int32] = [], segments: [KVCacheDecoder.Segment] = []
            rowIndices.removeAll(keepingCapacity: true); targets.removeAll(keepingCapacity: true); owners.removeAll(keepingCapacity: true)
            for (l, e) in candidates.enumerated() where next[l] < e.ids.count - 1 && tokens.count < decoder.chunk {
                let n = min(e.ids.count - 1 - next[l], decoder.chunk - tokens.count)
                for j in next[l]..<(next[l] + n) {
                    if e.lossMask[j + 1] != 0 {
                        rowIndices.append(Int32(tokens.count)); targets.append(e.ids[j + 1]); owners.append(l)
                    }
                    tokens.append(e.ids[j])
                }
                segments.append(.init(row: l, count: n))
                next[l] += n
            }
            guard !tokens.isEmpty else { break }
            let hidden = decoder.appendReturningHidden(tokens, segments: segments)
            guard !rowIndices.isEmpty else { continue }
            let c = model.config
            _ = CrossEntropyHead.forward(nil, nil, rowLoss, hidden, model.params.base + model.layout.lmHead, rowIndices, targets,
                                         rowIndices.count, c.hiddenSize, c.vocabSize, lossScale: 0,
                                         scratch: scratch.base, rowsPerChunk: headRows)
            for (i, l) in owners.enumerated() { nll[l] += Double(rowLoss[i]) }
        }
        return nll
    }
}

