import DTrainCore
import DTrainIO
import DTrainTestSupport
import Foundation
import Testing

/// dtrain's numbers against PyTorch/transformers/PEFT on the random 2-layer reference Llama
/// (`../shared/reference/tiny-llama`), each within 1e-4 of the reference relative to the
/// largest magnitude of that tensor.
@Suite struct TinyLlamaReferenceTests {
    static let tolerance = 1e-4
    let dir = Fixtures.referenceDir.appendingPathComponent("tiny-llama")

    struct Setup {
        let model: LlamaModel
        let cases: SafetensorsFile
        let batch: TokenBatch
    }

    func setup() throws -> Setup {
        let config = try HFModelLoader.config(directory: dir)
        let layout = ParameterLayout(config: config)
        let params = FloatBuffer(count: layout.count)
        try HFModelLoader.loadWeights(directory: dir, layout: layout, into: params)
        let model = LlamaModel(config: config, params: params)
        let cases = try SafetensorsFile(path: dir.appendingPathComponent("cases.safetensors").path)
        let ids = try cases.ints("input_ids"), labels = try cases.ints("labels")
        let batch = TokenBatch(batchSize: 2, seqLen: 16, tokens: ids, labels: labels)
        return Setup(model: model, cases: cases, batch: batch)
    }

    func check(_ actual: [Float], _ expected: [Float], _ label: String) {
        let c = compare(actual, expected, label: label)
        #expect(c.shapeMatches && c.maxRelToScale <= Self.tolerance, "\(c)")
    }

    @Test func configReadsRopeParameters() throws {
        let config = try HFModelLoader.config(directory: dir)
        #expect(config.ropeTheta == 10000)
        #expect(config.headDim == 16 && config.numKVHeads == 2 && !config.tieWordEmbeddings)
    }

    @Test func logitsAndLoss() throws {
        let s = try setup()
        s.model.prepare(batchSize: 2, seqLen: 16)
        check(s.model.logits(s.batch), try s.cases.floats("full.logits"), "full.logits")
        let loss = s.model.evaluate(s.batch)
        check([Float(loss.mean)], try s.cases.floats("full.loss"), "full.loss")
    }

    @Test(arguments: [false, true])
    func fullGradientsAndAdamW(recompute: Bool) throws {
        let s = try setup()
        s.model.enableTraining(.full, seed: 0)
        s.model.prepare(batchSize: 2, seqLen: 16, recompute: recompute)
        let loss = s.model.trainStep(s.batch)
        check([Float(loss.mean)], try s.cases.floats("full.loss"), "full.loss (train)")
        let grads = s.model.grads!
        for spec in s.model.layout.specs {
            let actual = Array(UnsafeBufferPointer(start: grads.pointer(at: spec.offset), count: spec.count))
            check(actual, try s.cases.floats("full.grad." + spec.name), "grad \(spec.name)")
        }
        // The optimizer is checked from the reference's own gradients: after one step from zero
        // moments the update is lr·g/(|g|+eps), so near-zero gradients would amplify the tiny
        // float32 differences already checked above.
        for spec in s.model.layout.specs {
            try s.cases.read("full.grad." + spec.name, into: grads.pointer(at: spec.offset), expectedShape: spec.shape)
        }
        let m = FloatBuffer(count: grads.count), v = FloatBuffer(count: grads.count)
        AdamW.step(s.model.params.base, m.base, v.base, grads.base, grads.count, lr: 1e-2,
                   hyper: AdamWHyper(beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1), t: 1)
        for spec in s.model.layout.specs {
            let actual = Array(UnsafeBufferPointer(start: s.model.params.pointer(at: spec.offset), count: spec.count))
            check(actual, try s.cases.floats("full.after_adamw." + spec.name), "after AdamW \(spec.name)")
        }
    }

    @Test(arguments: [false, true])
    func loraLogitsLossAndGradients(recompute: Bool) throws {
        let s = try setup()
        s.model.enableTraining(.lora(LoRAConfig(rank: 4, alpha: 8, dropout: 0, useRSLoRA: false, targets: LoRATarget.allCases)), seed: 0)
        s.model.prepare(batchSize: 2, seqLen: 16, recompute: recompute)
        let lora = s.model.lora!
        for spec in lora.specs {
            try s.cases.read("lora.weight." + spec.name, into: lora.weights.pointer(at: spec.offset), expectedShape: spec.shape)
        }
        check(s.model.logits(s.batch), try s.cases.floats("lora.logits"), "lora.logits")
        let loss = s.model.trainStep(s.batch)
        check([Float(loss.mean)], try s.cases.floats("lora.loss"), "lora.loss")
        #expect(s.model.grads == nil, "the frozen base must have no gradient buffer")
        for spec in lora.specs {
            let actual = Array(UnsafeBufferPointer(start: lora.grads.pointer(at: spec.offset), count: spec.count))
            check(actual, try s.cases.floats("lora.grad." + spec.name), "grad \(spec.name)")
        }
    }

    /// With LoRA dropout (the masks fixed by the step's key), the adapters' gradients are those
    /// of the loss the same forward computes: central differences over a sample of A and B entries
    /// of every projection, stored and recomputed activations alike.
    /// Rank 4 takes the path that writes the dropped-out input for the sgemms (the reference's
    /// adapter weights); rank 8 the fused kernels (`LoRA.fusesDropout`), with random weights.
    @Test(arguments: [(false, 4), (true, 4), (false, 8), (true, 8)])
    func loraDropoutGradientsMatchFiniteDifferences(recompute: Bool, rank: Int) throws {
        let s = try setup()
        s.model.enableTraining(.lora(LoRAConfig(rank: rank, alpha: 8, dropout: 0.3, useRSLoRA: false, targets: LoRATarget.allCases)), seed: 0)
        s.model.prepare(batchSize: 2, seqLen: 16, recompute: recompute)
        s.model.dropoutKey = CounterRandom.key(3, 4)
        let lora = s.model.lora!
        if rank == 4 {
            for spec in lora.specs {
                try s.cases.read("lora.weight." + spec.name, into: lora.weights.pointer(at: spec.offset), expectedShape: spec.shape)
            }
        } else {
            for i in 0..<lora.weights.count { lora.weights.base[i] = 0.05 * (CounterRandom.uniform(9, i) * 2 - 1) }
        }
        s.model.zeroGrads()
        _ = s.model.trainStep(s.batch)
        let analytic = Array(UnsafeBufferPointer(start: lora.grads.base, count: lora.grads.count))
        var picked: [Int] = []
        for spec in lora.specs { for j in stride(from: 0, to: spec.count, by: max(1, spec.count / 3)) { picked.append(spec.offset + j) } }
        var numeric: [Float] = [], expected: [Float] = []
        let w = lora.weights.base, eps: Float = 1e-2
        for i in picked {
            let saved = w[i]
            w[i] = saved + eps
            let up = s.model.trainStep(s.batch).mean
            w[i] = saved - eps
            let down = s.model.trainStep(s.batch).mean
            w[i] = saved
            numeric.append(Float((up - down) / Double(2 * eps)))
            expected.append(analytic[i])
        }
        let c = compare(expected, numeric, label: "LoRA dropout gradients (\(picked.count) entries)")
        #expect(c.maxRelToScale < 5e-3, "\(c)")
        // Dropout really acts: the training loss differs from the evaluation loss.
        #expect(abs(s.model.trainStep(s.batch).mean - s.model.evaluate(s.batch).mean) > 1e-4)
    }
}
