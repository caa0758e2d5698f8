import DTrainCore
import DTrainData
import DTrainIO
import DTrainTestSupport
import Foundation
import Testing

/// The data order, rank slices and packing.
@Suite struct BatchingTests {
    @Test(arguments: [1, 2, 3, 8])
    func everyExampleOncePerEpoch(ranks: Int) {
        let lengths = (0..<101).map { 5 + $0 % 17 }
        let plan = StepPlan(lengths: lengths, seed: 7, globalExamples: 24, globalTokens: nil, worldSize: ranks, micro: 3)
        for epoch in 0..<2 {
            let order = plan.order(epoch: epoch)
            let bounds = plan.stepBoundaries(order: order)
            var seen: [Int] = []
            for step in 0..<(bounds.count - 1) {
                for rank in 0..<ranks { seen += plan.microBatches(order: order, bounds: bounds, step: step, rank: rank).joined() }
            }
            #expect(seen.sorted() == Array(0..<101), "epoch \(epoch), \(ranks) ranks: \(seen.count) visits")
        }
        // The same steps hold the same examples whatever the number of ranks.
        let one = StepPlan(lengths: lengths, seed: 7, globalExamples: 24, globalTokens: nil, worldSize: 1, micro: 3)
        let order = plan.order(epoch: 1)
        #expect(order == one.order(epoch: 1))
        #expect(plan.order(epoch: 0) != plan.order(epoch: 1))
    }

    /// A run stopped mid-epoch and resumed, on the same or another number of ranks, from the
    /// position a checkpoint stores (epoch, steps taken in it), sees every example exactly once.
    @Test(arguments: [(1, 2), (2, 1), (3, 8), (8, 3), (2, 2)])
    func everyExampleOnceAcrossAResume(before: Int, after: Int) {
        let lengths = (0..<101).map { 5 + $0 % 17 }
        for (stopAt, budget) in [(2, nil), (3, 60)] as [(Int, Int?)] {
            func plan(_ ranks: Int) -> StepPlan {
                StepPlan(lengths: lengths, seed: 11, globalExamples: budget == nil ? 24 : nil, globalTokens: budget, worldSize: ranks, micro: 1)
            }
            var seen: [Int] = []
            // The first session: steps 0..<stopAt of epoch 0, then the checkpoint's position is (0, stopAt).
            let first = plan(before), order = first.order(epoch: 0), bounds = first.stepBoundaries(order: order)
            for step in 0..<stopAt { for rank in 0..<before { seen += first.microBatches(order: order, bounds: bounds, step: step, rank: rank).joined() } }
            // The resumed session rebuilds the order from (seed, epoch) and continues at stopAt.
            let second = plan(after), order2 = second.order(epoch: 0), bounds2 = second.stepBoundaries(order: order2)
            for step in stopAt..<(bounds2.count - 1) {
                for rank in 0..<after { seen += second.microBatches(order: order2, bounds: bounds2, step: step, rank: rank).joined() }
            }
            #expect(seen.sorted() == Array(0..<101), "\(before) -> \(after) ranks, budget \(budget.map(String.init) ?? "24 examples"): \(seen.count) visits")
        }
    }

    @Test func tokenBudgetSteps() {
        let lengths = [10, 20, 30, 40, 50]
        let plan = StepPlan(lengths: lengths, seed: 1, globalExamples: nil, globalTokens: 60, worldSize: 2, micro: 1)
        let order = plan.order(epoch: 0)
        let bounds = plan.stepBoundaries(order: order)
        for s in 0..<(bounds.count - 1) {
            let tokens = order[bounds[s]..<bounds[s + 1]].reduce(0) { $0 + lengths[$1] }
            #expect(tokens <= 60 || bounds[s + 1] - bounds[s] == 1)
        }
        #expect(bounds.last == 5)
    }

    @Test func packingPlacesBestFit() {
        let builder = BatchBuilder(maxSeqLen: 10, packing: true)
        let lengths = [6, 4, 5, 3, 2]
        let rows = builder.rows(for: [0, 1, 2, 3, 4]) { lengths[$0] }
        #expect(rows.allSatisfy { $0.reduce(0) { $0 + lengths[$1] } <= 10 })
        #expect(rows.count == 2, "\(rows)")
    }

    /// Refilling one batch gives what a fresh batch would hold, for a larger micro-batch then a
    /// smaller one, and the smaller one lands in the storage the larger one allocated (same
    /// address and capacity: a fresh allocation for it would be sized for the smaller batch).
    @Test(arguments: [false, true])
    func refilledBatchEqualsAFreshOne(packing: Bool) {
        let examples = [5, 3, 8, 2].enumerated().map { (e, n) in
            SequenceExample(ids: (0..<n).map { Int32(e * 10 + $0) }, lossMask: (0..<n).map { UInt8($0 % 2) })
        }
        let builder = BatchBuilder(maxSeqLen: 10, packing: packing)
        var reused = TokenBatch.empty
        var storage: [UnsafeRawPointer?] = [], capacities: [Int] = []
        for micro in [[0, 1, 2, 3], [1, 3]] {
            builder.fill(&reused, for: micro, from: examples)
            let fresh = builder.batch(for: micro, from: examples)
            #expect(reused.batchSize == fresh.batchSize && reused.seqLen == fresh.seqLen)
            #expect(reused.tokens == fresh.tokens && reused.labels == fresh.labels)
            #expect(reused.positions == fresh.positions && reused.segmentStarts == fresh.segmentStarts)
            #expect(reused.tokenKeys == fresh.tokenKeys)
            storage.append(reused.tokens.withUnsafeBufferPointer { UnsafeRawPointer($0.baseAddress) })
            capacities.append(reused.tokens.capacity)
        }
        #expect(storage[0] == storage[1] && capacities[0] == capacities[1],
                "the second micro-batch's tokens were allocated anew (capacity \(capacities))")
    }

    /// Packed and unpacked batches of the same examples give the same loss and gradients.
    @Test func packedEqualsUnpacked() throws {
        let dir = Fixtures.referenceDir.appendingPathComponent("tiny-llama")
        let config = try HFModelLoader.config(directory: dir)
        let params = FloatBuffer(count: ParameterLayout(config: config).count)
        try HFModelLoader.loadWeights(directory: dir, layout: ParameterLayout(config: config), into: params)
        let key = CounterRandom.key(99)
        let examples = [7, 12, 5, 9].enumerated().map { (e, n) in
            SequenceExample(ids: (0..<n).map { Int32(CounterRandom.uniform(key, e * 100 + $0) * 319) },
                            lossMask: (0..<n).map { UInt8($0 >= n / 3 ? 1 : 0) })
        }
        var results: [(LossSum, [Float])] = []
        for packing in [false, true] {
            let model = LlamaModel(config: config, params: params)
            model.enableTraining(.full, seed: 0)
            model.prepare(batchSize: 4, seqLen: 33)
            let batch = BatchBuilder(maxSeqLen: 33, packing: packing).batch(for: [0, 1, 2, 3], from: examples)
            #expect(packing ? batch.batchSize < 4 : batch.batchSize == 4)
            let loss = model.trainStep(batch, lossScale: 1)
            results.append((loss, model.grads!.toArray()))
        }
        #expect(results[0].0.count == results[1].0.count && results[0].0.count == examples.reduce(0) { $0 + $1.labelledCount })
        #expect(abs(results[0].0.sum - results[1].0.sum) < 1e-4 * results[0].0.sum, "loss \(results[0].0.sum) vs \(results[1].0.sum)")
        let c = compare(results[1].1, results[0].1, label: "packed vs unpacked gradients")
        #expect(c.maxRelToScale < 1e-5, "\(c)")
    }
}
