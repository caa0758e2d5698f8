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
    /// as training counts them) have the highest summed log-probability. The encodings are scored
    /// several questions at a time, each token they share run once (`LabelScorer`). Under
    /// several ranks each rank classifies a contiguous share of the questions.
    ///
    /// With `data` (the records encoded as `LossEvaluation` reads them), the same passes also
    /// give the loss of every example: each record's own encoding joins its question's
    /// candidates, where it is usually the gold label's candidate itself and costs nothing, so
    /// that eval with labels need not run the data twice. The loss is `LossEvaluation`'s to
    /// float32 rounding.
    ///
    /// - Throws: `UnknownLabel` for a reference (trimmed) that is not a label.
    public static func classified(model: LlamaModel, encoder: ExampleEncoder, questions: [Question], labels: [String],
                                  data: EncodedData? = nil,
                                  comm: Communicator = SingleProcessCommunicator()) throws -> (scores: TaskScores, loss: EvalResult?) {
        let scored = questions.enumerated().filter { $0.element.answer != nil }
        // One item per scored question (its labels' encodings, then its record's own when
        // `data` has it), then one per example no question holds.
        var items: [[TokenizedExample]] = [], itemExample: [Int?] = []
        var examplesAt: [RecordLocation: [Int]] = [:]  // a file given twice has each location twice
        for (i, location) in (data?.locations ?? []).enumerated() { examplesAt[location, default: []].append(i) }
        for (_, q) in scored {
            let gold = q.answer!.trimmingCharacters(in: .whitespacesAndNewlines)
            guard labels.contains(gold) else { throw UnknownLabel(location: q.location, gold: gold, labels: labels) }
            var item = try labels.map { label in
                guard let record = q.record.replacingAnswer(with: label) else {
                    throw DataConfigError(path: "\(q.location)", message: "the record has no answer to replace with the label \"\(label)\"")
                }
                return try encoder.encode(record)
            }
            let example = examplesAt[q.location]?.first
            if let example {
                examplesAt[q.location]!.removeFirst()
                item.append(data!.examples[example])
            }
            items.append(item); itemExample.append(example)
        }
        for example in examplesAt.values.joined().sorted() { items.append([data!.examples[example]]); itemExample.append(example) }
        let share = (items.count * comm.rank / comm.worldSize)..<(items.count * (comm.rank + 1) / comm.worldSize)
        var best: [Int] = []
        var sums = [Double](repeating: 0, count: data?.examples.count ?? 0)
        if !share.isEmpty {
            let mine = Array(items[share])
            for (i, nll) in zip(share, LabelScorer(model: model, questions: mine).scores(mine)) {
                if i < scored.count { best.append(nll.prefix(labels.count).indices.min { nll[$0] < nll[$1] }!) }
                if let example = itemExample[i] { sums[example] = nll.last! }
            }
        }
        // Each example was scored on one rank: adding the others' zeros changes no bit.
        comm.allReduceSum(&sums)
        let loss = data.map { data in
            EvalResult(sums: sums, counts: data.examples.map { $0.lossMask.dropFirst().filter { $0 != 0 }.count }, data: data)
        }
        var s = TaskScores()
        guard !scored.isEmpty else { return (s, loss) }
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
        return (s, loss)
    }
}
