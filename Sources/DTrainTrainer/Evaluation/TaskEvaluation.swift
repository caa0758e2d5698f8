import DTrainCore
import DTrainData
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
    /// (×100), corpus BLEU (sacreBLEU's 0–100).
    public static func generated(model: LlamaModel, tokenizer: BPETokenizer, questions: [Question], stopTokens: [Int32],
                                 maxNewTokens: Int, batch: Int) -> TaskScores {
        let scored = questions.enumerated().filter { $0.element.answer != nil }
        guard !scored.isEmpty else { return TaskScores() }
        let context = min(model.config.maxPositionEmbeddings, scored.map(\.element.prompt.count).max()! + maxNewTokens)
        let generator = TextGenerator(model: model, tokenizer: tokenizer, rows: min(batch, scored.count), context: context)
        let options = GenerationOptions(maxNewTokens: maxNewTokens,
                                        sampling: SamplingSettings(temperature: 0, topK: 0, topP: 1, repetitionPenalty: 1, seed: 0),
                                        stopTokens: Set(stopTokens), stopStrings: [])
        let results = generator.generate(scored.map(\.element.prompt), options: options)
        var s = TaskScores()
        s.answers = zip(scored, results).map { q, a in
            TaskScores.Answer(index: q.offset, location: q.element.location, prediction: a.text, reference: q.element.answer!)
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
    /// as training counts them) have the highest summed log-probability.
    ///
    /// - Throws: `UnknownLabel` for a reference (trimmed) that is not a label.
    public static func classified(model: LlamaModel, encoder: ExampleEncoder, questions: [Question], labels: [String],
                                  perPass: Int) throws -> TaskScores {
        let scored = questions.enumerated().filter { $0.element.answer != nil }
        var examples: [TokenizedExample] = []
        var locations: [RecordLocation] = []
        for (_, q) in scored {
            let gold = q.answer!.trimmingCharacters(in: .whitespacesAndNewlines)
            guard labels.contains(gold) else { throw UnknownLabel(location: q.location, gold: gold, labels: labels) }
            for label in labels {
                guard let record = q.record.replacingAnswer(with: label) else { continue }
                examples.append(try encoder.encode(record))
                locations.append(q.location)
            }
        }
        var s = TaskScores()
        guard !scored.isEmpty else { return s }
        let data = EncodedData(examples: examples, locations: locations, report: DataReport())
        let T = max(2, examples.map(\.ids.count).max() ?? 2)
        let result = LossEvaluation.evaluate(model: model, data: data, seqLen: T, perPass: perPass)
        var confusion: [String: [String: Int]] = [:]
        for (i, (offset, q)) in scored.enumerated() {
            let records = result.records[(i * labels.count)..<((i + 1) * labels.count)]
            // Summed negative log-likelihood of each label's tokens; the first smallest wins.
            let nll = records.map { $0.loss * Double($0.tokens) }
            let best = nll.indices.min { nll[$0] < nll[$1] }!
            let gold = q.answer!.trimmingCharacters(in: .whitespacesAndNewlines)
            s.answers.append(TaskScores.Answer(index: offset, location: q.location, prediction: labels[best], reference: gold))
            confusion[gold, default: [:]][labels[best], default: 0] += 1
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
