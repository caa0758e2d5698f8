import DTrainData
import DTrainTestSupport
import Foundation
import Testing

/// TaskMetrics against the packages users report with (SQuAD v2.0's functions, rouge-score,
/// sacreBLEU), on the cases Tests/python/make_metric_cases.py computed with them.
@Suite struct TaskMetricsTests {
    struct Cases: Decodable {
        struct Pair: Decodable {
            let prediction: String, reference: String
            let exact_match: Double, token_f1: Double, rouge_l: Double
            let tokens_13a: [String]
        }
        struct Corpus: Decodable { let indices: [Int], bleu: Double }
        let pairs: [Pair], corpora: [Corpus]
    }

    static func cases() throws -> Cases {
        let url = Fixtures.packageRoot.appendingPathComponent("Tests/python/task-metric-cases.json")
        return try JSONDecoder().decode(Cases.self, from: Data(contentsOf: url))
    }

    @Test func pairScoresEqualThePackages() throws {
        let cases = try Self.cases()
        #expect(cases.pairs.count >= 30)
        for c in cases.pairs {
            let what = "\(c.prediction.debugDescription) vs \(c.reference.debugDescription)"
            #expect(TaskMetrics.exactMatch(c.prediction, c.reference) == c.exact_match, "exact match, \(what)")
            #expect(abs(TaskMetrics.tokenF1(c.prediction, c.reference) - c.token_f1) < 1e-12, "token F1, \(what)")
            #expect(abs(TaskMetrics.rougeL(c.prediction, c.reference) - c.rouge_l) < 1e-12, "ROUGE-L, \(what)")
            #expect(TaskMetrics.tokenize13a(c.prediction) == c.tokens_13a[0], "13a tokens of \(c.prediction.debugDescription)")
            #expect(TaskMetrics.tokenize13a(c.reference) == c.tokens_13a[1], "13a tokens of \(c.reference.debugDescription)")
        }
    }

    @Test func corpusBLEUEqualsSacreBLEU() throws {
        let cases = try Self.cases()
        for corpus in cases.corpora {
            let predictions = corpus.indices.map { cases.pairs[$0].prediction }, references = corpus.indices.map { cases.pairs[$0].reference }
            let bleu = TaskMetrics.corpusBLEU(predictions, references)
            #expect(abs(bleu - corpus.bleu) < 1e-9, "corpus \(corpus.indices): \(bleu) vs sacreBLEU's \(corpus.bleu)")
        }
    }
}
