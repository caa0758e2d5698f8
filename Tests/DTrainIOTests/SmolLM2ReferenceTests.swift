import DTrainCore
import DTrainIO
import DTrainTestSupport
import Foundation
import Testing

/// The real SmolLM2-135M-Instruct GGUF against transformers' float32 forward of the same
/// dequantised weights (`../shared/reference/smollm2`): per-token losses within 1e-3,
/// last-position logits within 1e-2 absolute with the same argmax.
@Suite(.serialized) struct SmolLM2ReferenceTests {
    static let loaded: Result<LoadedModel, Error> = Result { try ModelLoader.load(path: try Fixtures.smolLM2Path()) }
    let cases: SafetensorsFile

    init() throws {
        cases = try SafetensorsFile(path: Fixtures.referenceDir.appendingPathComponent("smollm2/cases.safetensors").path)
    }

    @Test(arguments: ["p0", "p1", "p2"])
    func logitsAndTokenLosses(prompt: String) throws {
        let loaded = try Self.loaded.get()
        let ids = try cases.ints("\(prompt).ids")
        let T = ids.count, V = loaded.config.vocabSize
        let model = LlamaModel(config: loaded.config, params: loaded.params)
        model.prepare(batchSize: 1, seqLen: T)
        let batch = TokenBatch(batchSize: 1, seqLen: T, tokens: ids, labels: ids)

        let logits = model.logits(batch)
        let last = Array(logits[((T - 1) * V)...])
        let expected = try cases.floats("\(prompt).last_logits")
        let c = compare(last, expected, label: "\(prompt) last-position logits")
        #expect(c.shapeMatches && c.maxAbs <= 1e-2, "\(c)")
        let argmax = last.indices.max { last[$0] < last[$1] }, refArgmax = expected.indices.max { expected[$0] < expected[$1] }
        #expect(argmax == refArgmax, "\(prompt): argmax \(argmax ?? -1), reference \(refArgmax ?? -1)")

        var rowLoss = [Float](repeating: 0, count: T)
        let sum = rowLoss.withUnsafeMutableBufferPointer { model.evaluate(batch, rowLoss: $0.baseAddress) }
        #expect(sum.count == T - 1)
        let losses = compare(Array(rowLoss.prefix(T - 1)), try cases.floats("\(prompt).token_losses"), label: "\(prompt) token losses")
        #expect(losses.shapeMatches && losses.maxAbs <= 1e-3, "\(losses)")
        let mean = try cases.floats("\(prompt).mean_loss")[0]
        #expect(abs(Float(sum.mean) - mean) <= 1e-3, "\(prompt): mean loss \(sum.mean), reference \(mean)")
    }
}
