import CBLAS
import DTrainCore
import DTrainIO
import Foundation

/// What `dtrain bench step` measured.
public struct StepBenchmark {
    public var method: String
    /// The LoRA and AdamW settings (the run config's defaults unless overridden).
    public var settings: String
    public var batch: Int, seqLen: Int, threads: Int, steps: Int
    /// OpenBLAS's kernels that ran the step's products, e.g. "Haswell".
    public var blasKernels: String
    /// The CPU and how the kernels were chosen (`MachineKernels.summary`).
    public var machine: String
    /// Mean seconds per optimizer step (forward + backward + AdamW).
    public var secondsPerStep: Double
    /// The fastest timed step.
    public var fastestSecondsPerStep: Double
    public var tokensPerSecond: Double
    /// Model FLOPs per step: 6·N·tokens (full) or 4·N·tokens (LoRA), N = matmul weights.
    public var modelFlopsPerStep: Double
    public var achievedGFLOPs: Double
    /// The machine's sgemm peak: the best throughput measured in this process over square and
    /// step-shaped products with every OpenBLAS kernel set the CPU supports, not only the one
    /// that ran the step (a lesser set's own peak would hide what it loses).
    public var sgemmPeakGFLOPs: Double
    /// The kernel set that reached `sgemmPeakGFLOPs`.
    public var sgemmPeakKernels: String
    /// The best 2048³ sgemm of each kernel set measured, by name.
    public var sgemmPeakByKernels: [String: Double]
    /// sgemm throughput over the step's own shapes, weighted by their FLOPs.
    public var sgemmStepShapesGFLOPs: Double
    /// achieved / peak.
    public var mfu: Double
    /// The same for the fastest step. The peak is the best of many sgemm runs, so on a machine
    /// whose speed drifts (a shared VM) this is the like-for-like figure; `mfu` is the cautious one.
    public var mfuFastestStep: Double
    /// Each timed step against the sustained sgemm rate measured right before and right after
    /// it (the faster of the two probes' means), averaged over the timed steps. On a machine
    /// whose speed drifts within a run, step and sgemm are then measured alike (a mean over
    /// seconds) and under the same conditions; `mfu` sets a mean against the best instant.
    public var mfuPaired: Double
    /// The probes' mean GFLOP/s, one after each step (warm-up ones included), in order.
    public var probeMeanGFLOPs: [Double]
    public var peakRSSBytes: Int
    public var losses: [Double]
}

/// `dtrain bench step`: times training steps of a real model and relates them to the machine's sgemm.
public enum BenchCommand {
    /// Best and mean GFLOP/s of sgemm on (M, K) · (K, N) (row-major, B transposed as in
    /// Linear.forward) over repeated runs for about `seconds`, after one untimed run, each way
    /// a rank can run it on its threads: OpenBLAS's own threads, and the compute team splitting
    /// it (`Parallel.sgemm`, what training uses); the faster way counts. The matrices are mapped
    /// for the call and unmapped after it, so they leave nothing resident.
    static func sgemmGFLOPs(M: Int, N: Int, K: Int, transB: Bool, seconds: Double = 0.3) -> (best: Double, mean: Double) {
        let a = MappedFloats(count: M * K), b = MappedFloats(count: K * N), c = MappedFloats(count: M * N)
        for i in 0..<a.count { a.base[i] = Float(i % 7) * 0.01 }
        for i in 0..<b.count { b.base[i] = Float(i % 5) * 0.01 }
        let blas = ComputeThreads.withBLASThreads(Parallel.threads) {
            timed(M: M, N: N, K: K, seconds: seconds / 2) {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, transB ? CblasTrans : CblasNoTrans, Int32(M), Int32(N), Int32(K),
                            1, a.base, Int32(K), b.base, transB ? Int32(K) : Int32(N), 0, c.base, Int32(N))
            }
        }
        let team = timed(M: M, N: N, K: K, seconds: seconds / 2) {
            Parallel.sgemm(false, transB, M, N, K, 1, a.base, K, b.base, transB ? K : N, 0, c.base, N)
        }
        return (max(blas.best, team.best), max(blas.mean, team.mean))
    }

    /// Best and mean GFLOP/s of `run`, an (M, N, K) product, over about `seconds`.
    private static func timed(M: Int, N: Int, K: Int, seconds: Double, _ run: () -> Void) -> (best: Double, mean: Double) {
        run()
        var best = Double.infinity, total = 0.0, runs = 0
        let deadline = now() + seconds
        repeat {
            let t0 = now()
            run()
            let dt = now() - t0
            best = min(best, dt)
            total += dt
            runs += 1
        } while now() < deadline
        let flops = 2 * Double(M) * Double(N) * Double(K)
        return (flops / best / 1e9, flops * Double(runs) / total / 1e9)
    }

    /// Floats in their own anonymous mapping, unmapped at deinit: malloc may keep a freed block
    /// resident, which would count in the peak RSS of the training steps measured after it.
    final class MappedFloats {
        let base: UnsafeMutablePointer<Float>, count: Int, bytes: Int
        init(count: Int) {
            self.count = count
            bytes = max(count, 1) * MemoryLayout<Float>.stride
            let raw = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
            precondition(raw != MAP_FAILED, "bench: cannot map \(bytes) bytes")
            base = raw!.bindMemory(to: Float.self, capacity: max(count, 1))
        }
        deinit { munmap(base, bytes) }
    }

    /// The probe run after every step: (2048, 2048, 2048) sgemms for `probeSeconds` (about ten),
    /// on the widest kernel set the CPU supports (switched to for the probe and back, if the step
    /// runs another). Its mean is the machine's sustained sgemm rate at that moment, which
    /// `mfuPaired` compares the neighbouring steps with.
    static let probeSeconds = 0.8
    static func probe() -> (best: Double, mean: Double) {
        let run = { sgemmGFLOPs(M: 2048, N: 2048, K: 2048, transB: false, seconds: probeSeconds) }
        return withBLASKernels(MachineKernels.blasKernels(for: MachineKernels.cpu.level), run) ?? run()
    }

    /// Runs `body` with OpenBLAS switched to `kernels` (a no-op when they run already), then
    /// switches back; nil, without running `body`, when OpenBLAS cannot be switched to them.
    /// Only between products: nothing else may run a product meanwhile. A failure to switch
    /// back would leave the rest of the benchmark on other kernels, so it stops the benchmark.
    static func withBLASKernels<R>(_ kernels: String?, _ body: () -> R) -> R? {
        let running = MachineKernels.blasKernels
        guard let kernels else { return nil }
        if kernels.lowercased() == running.lowercased() { return body() }
        let switched = MachineKernels.switchBLAS(to: kernels)
        defer {
            // Not a precondition: -Ounchecked builds need not evaluate a precondition's condition.
            if !MachineKernels.restoreBLAS(to: running) {
                fatalError("bench: OpenBLAS could not be switched back to \(running) (runs \(MachineKernels.blasKernels))")
            }
        }
        return switched ? body() : nil
    }

    /// The mean over timed steps of each step's model GFLOP/s divided by the faster of the
    /// sustained sgemm rates measured just before and just after it. `probeGFLOPs[i]` follows
    /// step i of all steps (warm-up first), so timed step j is step warmup + j and the probe
    /// before it is step warmup + j - 1's (none before the very first step).
    static func pairedMFU(modelFlops: Double, timedSeconds: [Double], probeGFLOPs: [Double], warmup: Int) -> Double {
        precondition(probeGFLOPs.count == warmup + timedSeconds.count, "one probe per step")
        guard !timedSeconds.isEmpty else { return 0 }
        let ratios = timedSeconds.indices.map { j -> Double in
            let i = warmup + j
            let sustained = max(probeGFLOPs[i], i > 0 ? probeGFLOPs[i - 1] : 0)
            return modelFlops / timedSeconds[j] / 1e9 / sustained
        }
        return ratios.reduce(0, +) / Double(ratios.count)
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

    /// The settings a step is measured with: the run config's defaults (`LoRASection()`,
    /// `OptimSection()`), as `train` takes them, with the bench's own overrides.
    public struct Settings {
        public var lora = LoRASection()
        public var optim = OptimSection()
        public init() {}

        /// For the report: every setting and where it came from.
        public var description: String {
            let h = optim.hyper
            return String(format: "LoRA r %d, alpha %g, dropout %g, rslora %@; AdamW betas (%g, %g), eps %g, weight decay %g",
                          lora.r, lora.alpha, lora.dropout, lora.rslora ? "true" : "false", h.beta1, h.beta2, h.eps, h.weightDecay)
        }
    }

    public static func measure(modelPath: String, full: Bool, settings: Settings = Settings(), batch B: Int, seqLen T: Int,
                               threads: Int, steps: Int, warmup: Int, recompute: Bool,
                               progress: (String) -> Void) throws -> StepBenchmark {
        ComputeThreads.configure(threads)
        progress(MachineKernels.summary)
        if let warning = MachineKernels.warning { progress("warning: \(warning)") }
        let loaded = try ModelLoader.load(path: modelPath)
        let config = loaded.config
        let model = LlamaModel(config: config, params: loaded.params)
        model.enableTraining(full ? .full : .lora(settings.lora.coreConfig), seed: 1)
        if !full { model.dropoutKey = CounterRandom.key(1, 2) }
        model.prepare(batchSize: B, seqLen: T, recompute: recompute)
        let trainable = model.trainable!
        let optimizer = AdamWState(count: trainable.weights.count)
        // Deterministic pseudo-text: token ids drawn from the counter RNG, every position labelled.
        let key = CounterRandom.key(42)
        let tokens = (0..<(B * T)).map { Int32(CounterRandom.uniform(key, $0) * Float(config.vocabSize - 1)) }
        let batch = TokenBatch(batchSize: B, seqLen: T, tokens: tokens, labels: tokens)
        var losses: [Double] = []
        var times: [Double] = []
        var probes: [Double] = [], probeBest = 0.0
        var trainingPeakRSS = 0
        for i in 0..<(warmup + steps) {
            if i == warmup { Profiler.reset() }
            let t0 = now()
            model.zeroGrads()
            let loss = model.trainStep(batch)
            Profiler.measure(.optimizer) {
                optimizer.update(params: trainable.weights, grads: trainable.grads, lr: 1e-5, hyper: settings.optim.hyper)
            }
            let dt = now() - t0
            losses.append(loss.mean)
            if i >= warmup { times.append(dt) }
            // The peak RSS is read before each probe and its mark reset after it: the probe's
            // matrices (and those of the sgemm survey below) are the benchmark's, not training's.
            trainingPeakRSS = max(trainingPeakRSS, peakRSSBytes() ?? 0)
            let p = probe()
            probes.append(p.mean)
            probeBest = max(probeBest, p.best)
            resetPeakRSS()
            progress(String(format: "%@ step %d: %.3f s, loss %.4f | sgemm after it %.1f GFLOP/s (mean)",
                            i < warmup ? "warm-up" : "timed", i + 1, dt, loss.mean, probes[i]))
        }
        let perStep = times.reduce(0, +) / Double(max(times.count, 1))
        if Profiler.enabled {
            for (name, sec) in Profiler.report() {
                progress(String(format: "profile %-10@ %7.3f s/step (%4.1f%%)", name, sec / Double(steps), 100 * sec / Double(steps) / perStep))
            }
        }
        let nWeights = Double(model.layout.matmulWeightCount(config: config))
        let flops = (full ? 6 : 4) * nWeights * Double(B * T)
        progress("measuring sgemm in this process...")
        var weightedTime = 0.0, weightedFlops = 0.0, runningPeak = 0.0
        for (m, n, k, tb, count) in stepShapes(config: config, tokens: B * T, full: full) {
            let g = sgemmGFLOPs(M: m, N: n, K: k, transB: tb, seconds: 0.15).best
            let f = 2 * Double(m * n * k) * Double(count)
            weightedFlops += f
            weightedTime += f / (g * 1e9)
            runningPeak = max(runningPeak, g)
        }
        // The machine's peak: every kernel set the CPU supports, the running one included.
        let running = MachineKernels.blasKernels
        var byKernels: [String: Double] = [:]
        for kernels in Set([running] + MachineKernels.supportedBLASKernelSets).sorted() {
            guard let best = withBLASKernels(kernels, {
                var best = sgemmGFLOPs(M: 2048, N: 2048, K: 2048, transB: false, seconds: 0.5).best
                for (m, n, k, tb, _) in stepShapes(config: config, tokens: B * T, full: full).prefix(5) {
                    best = max(best, sgemmGFLOPs(M: m, N: n, K: k, transB: tb, seconds: 0.1).best)
                }
                return best
            }) else {
                progress("warning: OpenBLAS cannot be switched to its \(kernels) kernels here; not measured")
                continue
            }
            byKernels[kernels] = best
            progress(String(format: "sgemm peak with OpenBLAS's %@ kernels: %.1f GFLOP/s", kernels, best))
        }
        byKernels[running] = max(byKernels[running] ?? 0, runningPeak)
        let probeKernels = MachineKernels.blasKernels(for: MachineKernels.cpu.level) ?? running
        byKernels[probeKernels] = max(byKernels[probeKernels] ?? 0, probeBest)
        let (peakKernels, peak) = byKernels.max { $0.value < $1.value }!
        let achieved = flops / perStep / 1e9
        let fastest = times.min() ?? perStep
        return StepBenchmark(method: full ? "full" : "lora(r=\(settings.lora.r), \(settings.lora.targets.count) targets)",
                             settings: full ? settings.description.replacingOccurrences(of: #"^LoRA [^;]*; "#, with: "", options: .regularExpression)
                                 : settings.description,
                             batch: B, seqLen: T, threads: threads,
                             steps: steps, blasKernels: running, machine: MachineKernels.summary, secondsPerStep: perStep, fastestSecondsPerStep: fastest,
                             tokensPerSecond: Double(B * T) / perStep,
                             modelFlopsPerStep: flops, achievedGFLOPs: achieved, sgemmPeakGFLOPs: peak, sgemmPeakKernels: peakKernels, sgemmPeakByKernels: byKernels,
                             sgemmStepShapesGFLOPs: weightedFlops / weightedTime / 1e9, mfu: achieved / peak,
                             mfuFastestStep: flops / fastest / 1e9 / peak,
                             mfuPaired: pairedMFU(modelFlops: flops, timedSeconds: times, probeGFLOPs: probes, warmup: warmup), probeMeanGFLOPs: probes,
                             peakRSSBytes: trainingPeakRSS, losses: losses)
    }

    public static func report(_ r: StepBenchmark, json: Bool) {
        if json {
            print(jsonLine([
                "method": r.method, "settings": r.settings, "batch": r.batch, "seq_len": r.seqLen, "threads": r.threads, "steps": r.steps,
                "blas_kernels": r.blasKernels, "machine": r.machine,
                "sgemm_peak_kernels": r.sgemmPeakKernels, "sgemm_peak_by_kernels": r.sgemmPeakByKernels,
                "seconds_per_step": r.secondsPerStep, "seconds_per_step_min": r.fastestSecondsPerStep,
                "tokens_per_s": r.tokensPerSecond,
                "model_flops_per_step": r.modelFlopsPerStep, "achieved_gflops": r.achievedGFLOPs,
                "sgemm_peak_gflops": r.sgemmPeakGFLOPs, "sgemm_step_shapes_gflops": r.sgemmStepShapesGFLOPs,
                "mfu": r.mfu, "mfu_fastest_step": r.mfuFastestStep, "mfu_paired": r.mfuPaired,
                "sgemm_probe_mean_gflops": r.probeMeanGFLOPs, "peak_rss_bytes": r.peakRSSBytes, "losses": r.losses,
            ] as [String: Any]))
            return
        }
        print(r.machine)
        print(String(format: "method %@ | batch %dx%d | threads %d | %d timed steps | OpenBLAS kernels %@", r.method, r.batch, r.seqLen,
                     r.threads, r.steps, r.blasKernels))
        print("settings: \(r.settings) (the run config's defaults unless given on the command line)")
        print(String(format: "step %.3f s (fastest %.3f s) | %.1f tokens/s | %.1f GFLOP/s achieved (model FLOPs %.3g per step)",
                     r.secondsPerStep, r.fastestSecondsPerStep, r.tokensPerSecond, r.achievedGFLOPs, r.modelFlopsPerStep))
        let byKernels = r.sgemmPeakByKernels.sorted { $0.value > $1.value }
            .map { String(format: "%@ %.1f", $0.key, $0.value) }.joined(separator: ", ")
        print(String(format: "machine sgemm peak %.1f GFLOP/s (OpenBLAS's %@ kernels; by kernel set: %@)",
                     r.sgemmPeakGFLOPs, r.sgemmPeakKernels, byKernels))
        print(String(format: "step shapes' sgemm on %@ %.1f GFLOP/s | MFU %.1f%% of the machine's peak (%.1f%% of step-shape sgemm; fastest step %.1f%% of peak)",
                     r.blasKernels, r.sgemmStepShapesGFLOPs, 100 * r.mfu, 100 * r.achievedGFLOPs / r.sgemmStepShapesGFLOPs,
                     100 * r.mfuFastestStep))
        print(String(format: "MFU paired: each step against the sustained sgemm measured around it %.1f%% (sustained %.1f-%.1f GFLOP/s)",
                     100 * r.mfuPaired, r.probeMeanGFLOPs.min() ?? 0, r.probeMeanGFLOPs.max() ?? 0))
        print(String(format: "peak RSS %.2f GiB", Double(r.peakRSSBytes) / 1_073_741_824))
    }
}
