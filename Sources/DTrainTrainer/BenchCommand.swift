import CBLAS
import DTrainCore
import DTrainIO
import Foundation

/// What `dtrain bench step` measured.
public struct StepBenchmark {
    public var method: String
    public var batch: Int, seqLen: Int, threads: Int, steps: Int
    /// Mean seconds per optimizer step (forward + backward + AdamW).
    public var secondsPerStep: Double
    /// The fastest timed step.
    public var fastestSecondsPerStep: Double
    public var tokensPerSecond: Double
    /// Model FLOPs per step: 6·N·tokens (full) or 4·N·tokens (LoRA), N = matmul weights.
    public var modelFlopsPerStep: Double
    public var achievedGFLOPs: Double
    /// Best sgemm throughput measured in this process, over square and step-shaped products.
    public var sgemmPeakGFLOPs: Double
    /// sgemm throughput over the step's own shapes, weighted by their FLOPs.
    public var sgemmStepShapesGFLOPs: Double
    /// achieved / peak.
    public var mfu: Double
    /// The same for the fastest step. The peak is the best of many sgemm runs, so on a machine
    /// whose speed drifts (a shared VM) this is the like-for-like figure; `mfu` is the cautious one.
    public var mfuFastestStep: Double
    public var peakRSSBytes: Int
    public var losses: [Double]
}

/// `dtrain bench step`: times training steps of a real model and relates them to the machine's sgemm.
public enum BenchCommand {
    /// GFLOP/s of cblas_sgemm on (M, K) · (K, N) (row-major, B transposed as in Linear.forward),
    /// best of repeated runs over about `seconds`.
    static func sgemmGFLOPs(M: Int, N: Int, K: Int, transB: Bool, seconds: Double = 0.3) -> Double {
        let a = FloatBuffer(count: M * K), b = FloatBuffer(count: K * N), c = FloatBuffer(count: M * N)
        for i in 0..<a.count { a.base[i] = Float(i % 7) * 0.01 }
        for i in 0..<b.count { b.base[i] = Float(i % 5) * 0.01 }
        func run() {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, transB ? CblasTrans : CblasNoTrans, Int32(M), Int32(N), Int32(K),
                        1, a.base, Int32(K), b.base, transB ? Int32(K) : Int32(N), 0, c.base, Int32(N))
        }
        run()
        var best = Double.infinity
        let deadline = now() + seconds
        repeat {
            let t0 = now()
            run()
            best = min(best, now() - t0)
        } while now() < deadline
        return 2 * Double(M) * Double(N) * Double(K) / best / 1e9
    }

    /// The matrix products of one training step of `config` on N tokens, as (M, N, K, transB, count).
    static func stepShapes(config c: LlamaConfig, tokens N: Int, full: Bool) -> [(Int, Int, Int, Bool, Int)] {
        let C = c.hiddenSize, F = c.intermediateSize, L = c.numLayers, R = min(N, LlamaModel.headChunkRows)
        var shapes: [(Int, Int, Int, Bool, Int)] = [
            // forward projections (N, in) x (out, in)^T
            (N, c.qDim, C, true, L), (N, c.kvDim, C, true, 2 * L), (N, C, c.qDim, true, L),
            (N, F, C, true, 2 * L), (N, C, F, true, L),
            // input gradients (N, out) x (out, in)
            (N, C, c.qDim, false, L), (N, C, c.kvDim, false, 2 * L), (N, c.qDim, C, false, L),
            (N, C, F, false, 2 * L), (N, F, C, false, L),
            // LM head in chunks of R rows: logits and input gradient
            (R, c.vocabSize, C, true, N / R), (R, C, c.vocabSize, false, N / R),
        ]
        if full {
            // weight gradients (out, N) x (N, in)
            shapes += [(c.qDim, C, N, false, 2 * L), (c.kvDim, C, N, false, 2 * L), (F, C, N, false, 3 * L),
                       (c.vocabSize, C, R, false, N / R)]
        }
        return shapes
    }

    public static func measure(modelPath: String, full: Bool, loraRank: Int, batch B: Int, seqLen T: Int,
                               threads: Int, steps: Int, warmup: Int, recompute: Bool,
                               progress: (String) -> Void) throws -> StepBenchmark {
        ComputeThreads.configure(threads)
        let loaded = try ModelLoader.load(path: modelPath)
        let config = loaded.config
        let model = LlamaModel(config: config, params: loaded.params)
        model.enableTraining(full ? .full : .lora(LoRAConfig(rank: loraRank, alpha: Float(2 * loraRank))), seed: 1)
        model.prepare(batchSize: B, seqLen: T, recompute: recompute)
        let trainable = model.trainable!
        let optimizer = AdamWState(count: trainable.weights.count)
        // Deterministic pseudo-text: token ids drawn from the counter RNG, every position labelled.
        let key = CounterRandom.key(42)
        let tokens = (0..<(B * T)).map { Int32(CounterRandom.uniform(key, $0) * Float(config.vocabSize - 1)) }
        let batch = TokenBatch(batchSize: B, seqLen: T, tokens: tokens, labels: tokens)
        var losses: [Double] = []
        var times: [Double] = []
        for i in 0..<(warmup + steps) {
            if i == warmup { Profiler.reset() }
            let t0 = now()
            model.zeroGrads()
            let loss = model.trainStep(batch)
            Profiler.measure(.optimizer) {
                optimizer.update(params: trainable.weights, grads: trainable.grads, lr: 1e-5, hyper: AdamWHyper())
            }
            let dt = now() - t0
            losses.append(loss.mean)
            if i >= warmup { times.append(dt) }
            progress(String(format: "%@ step %d: %.3f s, loss %.4f", i < warmup ? "warm-up" : "timed", i + 1, dt, loss.mean))
        }
        let perStep = times.reduce(0, +) / Double(max(times.count, 1))
        // Read before the sgemm measurement below, whose matrices (up to ~0.2 GB for the LM-head
        // shapes) are the benchmark's own and no part of training.
        let trainingPeakRSS = peakRSSBytes() ?? 0
        if Profiler.enabled {
            for (name, sec) in Profiler.report() {
                progress(String(format: "profile %-10@ %7.3f s/step (%4.1f%%)", name, sec / Double(steps), 100 * sec / Double(steps) / perStep))
            }
        }
        let nWeights = Double(model.layout.matmulWeightCount(config: config))
        let flops = (full ? 6 : 4) * nWeights * Double(B * T)
        progress("measuring sgemm in this process...")
        var weightedTime = 0.0, weightedFlops = 0.0, peak = 0.0
        for (m, n, k, tb, count) in stepShapes(config: config, tokens: B * T, full: full) {
            let g = sgemmGFLOPs(M: m, N: n, K: k, transB: tb, seconds: 0.15)
            let f = 2 * Double(m * n * k) * Double(count)
            weightedFlops += f
            weightedTime += f / (g * 1e9)
            peak = max(peak, g)
        }
        peak = max(peak, sgemmGFLOPs(M: 2048, N: 2048, K: 2048, transB: false, seconds: 0.5))
        let achieved = flops / perStep / 1e9
        let fastest = times.min() ?? perStep
        return StepBenchmark(method: full ? "full" : "lora(r=\(loraRank), 7 targets)", batch: B, seqLen: T, threads: threads,
                             steps: steps, secondsPerStep: perStep, fastestSecondsPerStep: fastest,
                             tokensPerSecond: Double(B * T) / perStep,
                             modelFlopsPerStep: flops, achievedGFLOPs: achieved, sgemmPeakGFLOPs: peak,
                             sgemmStepShapesGFLOPs: weightedFlops / weightedTime / 1e9, mfu: achieved / peak,
                             mfuFastestStep: flops / fastest / 1e9 / peak, peakRSSBytes: trainingPeakRSS, losses: losses)
    }

    public static func report(_ r: StepBenchmark, json: Bool) {
        if json {
            print(jsonLine([
                "method": r.method, "batch": r.batch, "seq_len": r.seqLen, "threads": r.threads, "steps": r.steps,
                "seconds_per_step": r.secondsPerStep, "seconds_per_step_min": r.fastestSecondsPerStep,
                "tokens_per_s": r.tokensPerSecond,
                "model_flops_per_step": r.modelFlopsPerStep, "achieved_gflops": r.achievedGFLOPs,
                "sgemm_peak_gflops": r.sgemmPeakGFLOPs, "sgemm_step_shapes_gflops": r.sgemmStepShapesGFLOPs,
                "mfu": r.mfu, "mfu_fastest_step": r.mfuFastestStep, "peak_rss_bytes": r.peakRSSBytes, "losses": r.losses,
            ] as [String: Any]))
            return
        }
        print(String(format: "method %@ | batch %dx%d | threads %d | %d timed steps", r.method, r.batch, r.seqLen, r.threads, r.steps))
        print(String(format: "step %.3f s (fastest %.3f s) | %.1f tokens/s | %.1f GFLOP/s achieved (model FLOPs %.3g per step)",
                     r.secondsPerStep, r.fastestSecondsPerStep, r.tokensPerSecond, r.achievedGFLOPs, r.modelFlopsPerStep))
        print(String(format: "sgemm peak %.1f GFLOP/s | over the step's shapes %.1f GFLOP/s | MFU %.1f%% of peak (%.1f%% of step-shape sgemm; fastest step %.1f%% of peak)",
                     r.sgemmPeakGFLOPs, r.sgemmStepShapesGFLOPs, 100 * r.mfu, 100 * r.achievedGFLOPs / r.sgemmStepShapesGFLOPs,
                     100 * r.mfuFastestStep))
        print(String(format: "peak RSS %.2f GiB", Double(r.peakRSSBytes) / 1_073_741_824))
    }
}
