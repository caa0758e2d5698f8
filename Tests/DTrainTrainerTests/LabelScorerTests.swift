import DTrainCore
import DTrainData
import DTrainIO
import DTrainTestSupport
@testable import DTrainTrainer
import Foundation
import Testing

/// Classification's scorer runs the candidates of many questions as one prefix tree in a KV
/// cache; each candidate's summed loss must still be what a full forward pass over that
/// candidate alone gives.
@Suite(.serialized) struct LabelScorerTests {
    /// Questions sharing an instruction, labels sharing beginnings, one label a prefix of
    /// another, a question twice, a lone sequence, loss on a prompt token; in small passes and
    /// small groups (chains split across passes, several groups) and in one group.
    @Test func prefixTreeScoresEqualFullForwardPasses() throws {
        let loaded = try ModelLoader.load(path: try Fixtures.smolLM2Path())
        let tokenizer = try ModelAssets.load(path: try Fixtures.smolLM2Path()).tokenizer
        let model = LlamaModel(config: loaded.config, params: loaded.params)
        func candidate(_ prompt: String, _ answer: String, lossOnPrompt: Int? = nil) -> TokenizedExample {
            let p = tokenizer.encode(prompt), a = tokenizer.encode(answer) + [2]
            var mask = [UInt8](repeating: 0, count: p.count) + [UInt8](repeating: 1, count: a.count)
            if let lossOnPrompt { mask[lossOnPrompt] = 1 }
            return TokenizedExample(ids: p + a, lossMask: mask, text: prompt + answer, format: .promptCompletion)
        }
        let instruction = "Rewrite the date in ISO 8601 format (YYYY-MM-DD).\nDate: "
        let labels = [" 1962-02-09", " 1962-09-02", " 1988-04-06", " 2004", " 2004-11-03"]
        var questions = ["3 Nov 2004", "9/2/1962 (month/day/year)", "1988.04.06", "3 Nov 2004"].map { date in
            labels.map { candidate(instruction + date + "\nISO:", $0) }
        }
        questions.append([candidate("The capital of France is", " Paris", lossOnPrompt: 3)])
        questions.append(["Rome", "Romania"].map { candidate("The capital of Italy is", " " + $0) })

        var expected: [[Double]] = []
        for q in questions {
            expected.append(q.map { e in
                let T = e.ids.count
                model.prepare(batchSize: 1, seqLen: T)
                var rowLoss = [Float](repeating: 0, count: T)
                _ = rowLoss.withUnsafeMutableBufferPointer {
                    model.evaluate(TokenBatch(batchSize: 1, seqLen: T, tokens: e.ids, labels: e.ids), rowLoss: $0.baseAddress)
                }
                return (0..<(T - 1)).filter { e.lossMask[$0 + 1] != 0 }.reduce(0.0) { $0 + Double(rowLoss[$1]) }
            })
        }
        let flat = expected.flatMap { $0 }.map(Float.init)
        for (cacheBytes, chunk) in [(8 << 20, 7), (512 << 20, 1024)] {
            let scorer = LabelScorer(model: model, questions: questions, cacheBytes: cacheBytes, chunk: chunk)
            if cacheBytes == 8 << 20 { #expect(scorer.groups.count > 1, "\(scorer.groups)") } else { #expect(scorer.groups.count == 1) }
            let scores = scorer.scores(questions)
            #expect(scores.map(\.count) == questions.map(\.count))
            let c = compare(scores.flatMap { $0 }.map(Float.init), flat, label: "Σ −log p per candidate, cache \(cacheBytes >> 20) MiB, passes of \(chunk)")
            print(c)
            #expect(c.maxAbs < 2e-3 && c.maxRelToScale < 1e-4, "\(c)")
            #expect(scorer.best(questions) == expected.map { nll in nll.indices.min { nll[$0] < nll[$1] }! })
        }
    }
}
