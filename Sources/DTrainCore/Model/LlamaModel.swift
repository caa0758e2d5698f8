import Foundation

/// Which parameters a run trains.
public enum TrainingMethod: Sendable, Equatable {
    /// Every parameter; gradients and optimizer state cover the whole model.
    case full
    /// Adapters only; the base has no gradient buffers.
    case lora(LoRAConfig)
}

/// A Llama-family decoder with its parameters, gradients and activations, each in one flat buffer.
///
/// The forward pass is a flat list of kernel calls per layer; backward is the same list reversed,
/// with one running gradient of the residual stream (`dResid`) that every branch adds into.
/// Activations are sized once by `prepare(batchSize:seqLen:recompute:)` for at most B rows of at
/// most T tokens; a batch within that capacity runs in place (packed micro-batches have a variable
/// number of rows), a larger one is a precondition failure, never a silent reallocation.
public final class LlamaModel {
    public let config: LlamaConfig
    public let layout: ParameterLayout
    /// Every base parameter, laid out by `layout`.
    public let params: FloatBuffer
    /// Gradients of `params` (full fine-tuning only).
    public private(set) var grads: FloatBuffer?
    /// Adapters and their gradients (LoRA only).
    public private(set) var lora: LoRAAdapters?
    /// The method set by `enableTraining`; nil for inference only.
    public private(set) var method: TrainingMethod?
    /// Key of the LoRA-dropout masks for the next step; the trainer derives it from (seed, step, micro-step).
    public var dropoutKey: UInt64 = 0

    /// Capacity the activations were sized for: rows and tokens per row.
    public private(set) var capacityRows = 0
    public private(set) var capacityLength = 0
    /// B and T of the batch being run.
    public private(set) var batchSize = 0
    public private(set) var seqLen = 0
    /// Called after layer l's backward has finished adding into its gradients (layers run from
    /// L-1 down to 0), so the trainer can start reducing them while earlier layers compute.
    public var layerBackwardDone: ((Int) -> Void)?
    /// Whether layer activations are recomputed during backward instead of stored.
    public private(set) var recompute = false

    private var acts: FloatBuffer?
    private var o = ActivationOffsets()
    private var ints: UnsafeMutablePointer<Int32>?
    private var tokenKeys: UnsafeMutablePointer<UInt64>?  // (B·T) dropout row keys
    private var ropeCos: [Float] = []
    private var ropeSin: [Float] = []
    private var hasSegments = false
    private var activeRows = 0
    /// Adapters that read the same input, in the order their A's are stacked: q/k/v read the
    /// first norm's output, gate/up the second's. Set by `enableTraining`, so that no step
    /// builds a list.
    private var attentionInputAdapters: [LoRATarget] = []
    private var mlpInputAdapters: [LoRATarget] = []

    /// Rows of LM-head logits built at a time. Each chunk streams the (V, C) head weight through
    /// its sgemms (and, in full fine-tuning, the (V, C) head gradient), so larger chunks read
    /// them fewer times, until the chunk's logits (256 rows: 48 MB for a 49k vocabulary) leave
    /// the caches anyway; 256 was the fastest of 128, 256 and 512 for SmolLM2. The scratch shares its memory
    /// with the layers' (see `offsets`), which is what lets full fine-tuning afford 256 too.
    public static let headChunkRows = 256

    /// Wraps loaded parameters (laid out by `ParameterLayout(config:)`).
    public init(config: LlamaConfig, params: FloatBuffer) {
        let layout = ParameterLayout(config: config)
        precondition(params.count == layout.count, "LlamaModel: parameter buffer holds \(params.count) floats, layout needs \(layout.count)")
        self.config = config
        self.layout = layout
        self.params = params
    }

    deinit { ints?.deallocate(); tokenKeys?.deallocate() }

    /// Allocates what training with `method` needs: full gradients, or adapters seeded by `seed`.
    public func enableTraining(_ method: TrainingMethod, seed: UInt64) {
        self.method = method
        switch method {
        case .full:
            grads = FloatBuffer(count: layout.count)
            lora = nil
        case .lora(let cfg):
            grads = nil
            lora = LoRAAdapters(config: cfg, model: config, seed: seed)
        }
        let targets: [LoRATarget] = { if case .lora(let c) = method { return c.targets } else { return [] } }()
        attentionInputAdapters = [.q_proj, .k_proj, .v_proj].filter { targets.contains($0) }
        mlpInputAdapters = [.gate_proj, .up_proj].filter { targets.contains($0) }
    }

    /// The trainable parameters, their gradients and their names, as one flat range each.
    public var trainable: (weights: FloatBuffer, grads: FloatBuffer, specs: [ParameterSpec])? {
        switch method {
        case .full?: return grads.map { (params, $0, layout.specs) }
        case .lora?: return lora.map { ($0.weights, $0.grads, $0.specs) }
        case nil: return nil
        }
    }

    /// Zeroes the trainable gradients (before a new accumulation).
    public func zeroGrads() {
        grads?.zero()
        lora?.grads.zero()
    }

    // MARK: - Activation memory

    /// The activation table: the offset of every activation and scratch tensor inside `acts`,
    /// read by forward and backward alike. N = B·T tokens, C hidden, F intermediate, L layers,
    /// S = L stored layers (1 with recompute), r the LoRA rank, NH heads, V the vocabulary.
    struct ActivationOffsets {
        // Kept from forward for backward, per layer.
        var resid = 0      // (L+1, N, C) residual stream: each layer's input, then the final one
        var rstd1 = 0      // (L, N) 1/rms of the attention norm's input
        var rstd2 = 0      // (L, N) 1/rms of the MLP norm's input
        var q = 0          // (S, N, NH·HD) queries after RoPE
        var k = 0          // (S, N, KVH·HD) keys after RoPE
        var v = 0          // (S, N, KVH·HD) values
        var attnOut = 0    // (S, N, NH·HD) attention output, before o_proj
        var lse = 0        // (S, B, NH, T) log-sum-exp of each attention row
        var resid2 = 0     // (S, N, C) residual after attention
        var gate = 0       // (S, N, F) gate_proj output
        var up = 0         // (S, N, F) up_proj output
        var loraXA = 0     // (S, 7, N, r) each adapter's A·x (a group's blocks side by side)
        var attnKept = 0   // (S, attnKeptCount) attention probabilities kept (LoRA, recompute)
        var attnKeptCount = 0
        var lnf = 0        // (N, C) final-normed states, the LM head's input
        var rstdF = 0      // (N) 1/rms of the final norm's input
        var dln = 0        // (N, C) ∂L/∂(a normed input); first the LM head's output
        // One layer's scratch, reused by every layer (and shared with the head's scratch).
        var ln = 0         // (N, C) the current norm's output
        var h = 0          // (N, F) SwiGLU output, rebuilt in backward
        var dResid = 0     // (N, C) running ∂L/∂(residual stream)
        var dq = 0, dk = 0, dv = 0  // (N, NH·HD), (N, KVH·HD) ×2 ∂L/∂q, k, v
        var dAttn = 0      // (N, NH·HD) ∂L/∂(attention output)
        var dh = 0         // (N, F) ∂L/∂h
        var dgate = 0, dup = 0      // (N, F) each ∂L/∂gate, ∂L/∂up
        var attnScratch = 0         // per-thread attention workspace (Attention.scratchCount)
        var loraDXA = 0    // (N, 3r) one adapter group's ∂L/∂(A·x)
        var loraPartial = 0         // LoRA.backwardB's per-thread partial sums
        var dropIn = 0     // (N, max(C, F, NH·HD)) an adapter's dropped-out input
        var dropGrad = 0   // (N, max(C, F, NH·HD)) ∂L/∂(dropped-out input)
        var headScratch = 0         // (headRows, V) logits chunk and the head's workspace
        var headRows = 1
        /// `Parallel.threads` when these were sized: attention's workers and LoRA's partial sums
        /// each have one scratch per thread, so the kernels split their work this many ways.
        var threads = 1
        var total = 0
    }

    /// Floats of activation memory for a B x T batch (what `prepare` allocates).
    ///
    /// Per layer and token the model keeps the residual input (C), rstd (2), q (NH·HD), k and v
    /// (2·KVH·HD), attention output (NH·HD), the post-attention residual (C), gate and up (2F), and
    /// the LoRA A·x products (7r), plus NH log-sum-exps per row. LoRA also keeps each layer's
    /// attention probabilities (`Attention.keptCount`, 62% of B·NH·T² at T = 256) so that backward
    /// need not recompute them. With `recompute`, only the residual input and rstd are kept per
    /// layer and one layer's worth (probabilities included) is rebuilt in backward, costing one
    /// extra layer forward per layer (about a third more compute for full training).
    public static func activationFloats(config: LlamaConfig, batchSize B: Int, seqLen T: Int,
                                        loraRank: Int?, recompute: Bool) -> Int {
        offsets(config: config, B: B, T: T, loraRank: loraRank, recompute: recompute).total
    }

    static func offsets(config c: LlamaConfig, B: Int, T: Int, loraRank: Int?, recompute: Bool) -> ActivationOffsets {
        let N = B * T, C = c.hiddenSize, F = c.intermediateSize, L = c.numLayers, V = c.vocabSize
        let S = recompute ? 1 : L  // layers whose full activations are stored
        let r = loraRank ?? 0
        var o = ActivationOffsets()
        var at = 0
        func take(_ n: Int) -> Int { defer { at += (n + 15) / 16 * 16 }; return at }
        o.resid = take((L + 1) * N * C)
        o.rstd1 = take(L * N); o.rstd2 = take(L * N)
        o.q = take(S * N * c.qDim); o.k = take(S * N * c.kvDim); o.v = take(S * N * c.kvDim)
        o.attnOut = take(S * N * c.qDim); o.lse = take(S * B * c.numHeads * T)
        o.resid2 = take(S * N * C)
        o.gate = take(S * N * F); o.up = take(S * N * F)
        o.loraXA = take(S * LoRATarget.allCases.count * N * r)
        o.lnf = take(N * C); o.rstdF = take(N)
        o.dln = take(N * C)  // also the LM head's output: ∂L/∂(final-normed states)
        let group = c.numHeads / c.numKVHeads
        // Attention probabilities kept for backward, which then skips recomputing them: for LoRA
        // (its activations are small) and with recompute (one layer's worth); full fine-tuning
        // without recompute keeps its memory for the peak-RSS budget instead.
        o.attnKeptCount = (loraRank != nil || recompute) ? Attention.keptCount(B: B, T: T, NH: c.numHeads, KVH: c.numKVHeads) : 0
        o.attnKept = take(S * o.attnKeptCount)
        // The layers' scratch and the LM head's share memory: the head runs after the last
        // layer's forward and before the first layer's backward, when no layer scratch holds
        // anything (35 MB for SmolLM2 at 4 x 256 that full fine-tuning's budget needs).
        let shared = at
        o.ln = take(N * C); o.h = take(N * F)
        o.dResid = take(N * C)
        o.dq = take(N * c.qDim); o.dk = take(N * c.kvDim); o.dv = take(N * c.kvDim); o.dAttn = take(N * c.qDim)
        o.dh = take(N * F); o.dgate = take(N * F); o.dup = take(N * F)
        o.threads = Parallel.threads
        o.attnScratch = take(Attention.scratchCount(T: T, HD: c.headDim, group: group, threads: o.threads))
        o.loraDXA = take(N * r * 3)  // one adapter group's ∂/∂(A x): up to q, k and v
        o.loraPartial = take(r > 0 ? LoRA.backwardScratchCount(N: N, threads: o.threads) : 0)  // LoRA.backwardB's per-thread partials of ∂/∂(A x)
        o.dropIn = take(r > 0 ? N * max(C, F, c.qDim) : 0)
        o.dropGrad = take(r > 0 ? N * max(C, F, c.qDim) : 0)
        let layerScratchEnd = at
        at = shared
        o.headRows = min(N, headChunkRows)
        o.headScratch = take(CrossEntropyHead.scratchCount(rowsPerChunk: o.headRows, C: C, V: V))
        at = max(at, layerScratchEnd)
        o.total = at
        return o
    }

    /// Sizes the activation buffers for B x T batches; call once before the first step.
    public func prepare(batchSize B: Int, seqLen T: Int, recompute: Bool = false) {
        if acts != nil && B == capacityRows && T == capacityLength && recompute == self.recompute { return }
        let rank: Int? = { if case .lora(let c)? = method { return c.rank } else { return nil } }()
        o = Self.offsets(config: config, B: B, T: T, loraRank: rank, recompute: recompute)
        acts = FloatBuffer(count: o.total)
        capacityRows = B; capacityLength = T; batchSize = B; seqLen = T; self.recompute = recompute
        ints?.deallocate()
        ints = .allocate(capacity: 5 * B * T)
        ints!.initialize(repeating: 0, count: 5 * B * T)
        tokenKeys?.deallocate()
        tokenKeys = .allocate(capacity: B * T)
        tokenKeys!.initialize(repeating: 0, count: B * T)
        let maxPos = max(config.maxPositionEmbeddings, T)
        (ropeCos, ropeSin) = RoPE.makeTables(maxPositions: maxPos, headDim: config.headDim, theta: config.ropeTheta)
    }

    // MARK: - Public passes

    /// Forward and backward on one micro-batch; gradients are added into the trainable gradient
    /// buffer (call `zeroGrads()` before an accumulation). Each labelled position's loss gradient
    /// is scaled by `lossScale` (default 1 / labelled positions in this batch, the batch mean).
    @discardableResult
    public func trainStep(_ batch: TokenBatch, lossScale: Float? = nil) -> LossSum {
        guard method != nil else { preconditionFailure("LlamaModel.trainStep: call enableTraining first") }
        load(batch)
        let scale = lossScale ?? (activeRows > 0 ? 1 / Float(activeRows) : 0)
        let N = batchSize * seqLen, C = config.hiddenSize, L = config.numLayers
        let a = acts!.base, p = params.base
        forwardTrunk(training: true)
        // Head: loss and its gradient w.r.t. the final-normed states, in one pass.
        let dlnf = a + o.dln
        dlnf.update(repeating: 0, count: N * C)
        let dHead: UnsafeMutablePointer<Float>? = (method == .full) ? grads!.pointer(at: layout.lmHead) : nil
        let sum = Profiler.measure(.head) { CrossEntropyHead.forward(dlnf, dHead, nil, a + o.lnf, p + layout.lmHead,
                                           intsRows, intsTargets, activeRows, C, config.vocabSize,
                                           lossScale: scale, scratch: a + o.headScratch, rowsPerChunk: o.headRows) }
        let dResid = a + o.dResid
        dResid.update(repeating: 0, count: N * C)
        Profiler.measure(.rmsnorm) { RMSNorm.backward(dResid, fullGrad(layout.finalNorm), dlnf, a + o.resid + L * N * C,
                         p + layout.finalNorm, a + o.rstdF, N, C) }
        for l in stride(from: L - 1, through: 0, by: -1) {
            layerBackward(l)
            layerBackwardDone?(l)
        }
        if let g = fullGrad(layout.embedding) {
            Profiler.measure(.embedding) { Embedding.backward(g, dResid, intsTokens, N, C) }
        }
        return LossSum(sum: sum, count: activeRows)
    }

    /// Forward only: the summed loss over labelled positions; `rowLoss`, when given, receives
    /// each labelled position's loss in order of position (holding at least B·T floats).
    public func evaluate(_ batch: TokenBatch, rowLoss: UnsafeMutablePointer<Float>? = nil) -> LossSum {
        load(batch)
        forwardTrunk(training: false)
        let a = acts!.base
        let sum = Profiler.measure(.head) { CrossEntropyHead.forward(nil, nil, rowLoss, a + o.lnf, params.base + layout.lmHead,
                                           intsRows, intsTargets, activeRows, config.hiddenSize, config.vocabSize,
                                           lossScale: 0, scratch: a + o.headScratch, rowsPerChunk: o.headRows) }
        return LossSum(sum: sum, count: activeRows)
    }

    /// The full (B, T, V) logits of a batch (for tests and inspection; allocates).
    public func logits(_ batch: TokenBatch) -> [Float] {
        load(batch)
        forwardTrunk(training: false)
        let N = batchSize * seqLen, V = config.vocabSize, C = config.hiddenSize
        var out = [Float](repeating: 0, count: N * V)
        out.withUnsafeMutableBufferPointer { buf in
            Profiler.measure(.linear) { Linear.forward(buf.baseAddress!, acts!.base + o.lnf, params.base + layout.lmHead, nil, N, C, V) }
        }
        return out
    }

    // MARK: - Inputs

    private var intsTokens: UnsafeMutablePointer<Int32> { ints! }
    private var intsPositions: UnsafeMutablePointer<Int32> { ints! + batchSize * seqLen }
    private var intsSegments: UnsafeMutablePointer<Int32> { ints! + 2 * batchSize * seqLen }
    private var intsRows: UnsafeMutablePointer<Int32> { ints! + 3 * batchSize * seqLen }
    private var intsTargets: UnsafeMutablePointer<Int32> { ints! + 4 * batchSize * seqLen }

    /// Copies a batch into the integer buffers and lists the positions that carry a label.
    private func load(_ batch: TokenBatch) {
        precondition(acts != nil, "LlamaModel: call prepare(batchSize:seqLen:) before running a batch")
        precondition(batch.batchSize <= capacityRows && batch.seqLen <= capacityLength && batch.batchSize > 0 && batch.seqLen > 0,
                     "LlamaModel: batch is \(batch.batchSize)x\(batch.seqLen) but activations were sized for at most \(capacityRows)x\(capacityLength)")
        batchSize = batch.batchSize
        seqLen = batch.seqLen
        let B = batchSize, T = seqLen, V = Int32(config.vocabSize)
        for i in 0..<(B * T) {
            let id = batch.tokens[i]
            precondition(id >= 0 && id < V, "LlamaModel: token id \(id) at position \(i) is outside the vocabulary (0..<\(V))")
            intsTokens[i] = id
        }
        let maxPos = Int32(ropeCos.count / (config.headDim / 2))
        for b in 0..<B {
            for t in 0..<T {
                let pos = batch.positions?[b * T + t] ?? Int32(t)
                precondition(pos >= 0 && pos < maxPos, "LlamaModel: position \(pos) outside the RoPE table (0..<\(maxPos))")
                intsPositions[b * T + t] = pos
                let seg = batch.segmentStarts?[b * T + t] ?? 0
                precondition(seg >= 0 && Int(seg) <= t, "LlamaModel: segment start \(seg) after its position \(t)")
                intsSegments[b * T + t] = seg
            }
        }
        hasSegments = batch.segmentStarts != nil
        for i in 0..<(B * T) { tokenKeys![i] = batch.tokenKeys?[i] ?? CounterRandom.mix(UInt64(i)) }
        var n = 0
        for b in 0..<B {
            for t in 0..<(T - 1) {
                let label = batch.labels[b * T + t + 1]
                if label == TokenBatch.ignoreIndex { continue }
                precondition(label >= 0 && label < V, "LlamaModel: label \(label) outside the vocabulary")
                intsRows[n] = Int32(b * T + t)
                intsTargets[n] = label
                n += 1
            }
        }
        activeRows = n
    }

    // MARK: - Forward

    private func slot(_ l: Int) -> Int { recompute ? 0 : l }

    /// Layer l's kept attention probabilities (`Attention.keptCount` floats), or nil when none are kept.
    private func keptAttention(_ l: Int) -> UnsafeMutablePointer<Float>? {
        o.attnKeptCount > 0 ? acts!.base + o.attnKept + slot(l) * o.attnKeptCount : nil
    }

    private func fullGrad(_ offset: Int?) -> UnsafeMutablePointer<Float>? {
        guard let offset, method == .full else { return nil }
        return grads!.pointer(at: offset)
    }

    private func forwardTrunk(training: Bool) {
        let N = batchSize * seqLen, C = config.hiddenSize, L = config.numLayers
        let a = acts!.base, p = params.base
        Profiler.measure(.embedding) { Embedding.forward(a + o.resid, intsTokens, p + layout.embedding, N, C) }
        for l in 0..<L { layerForward(l, training: training) }
        Profiler.measure(.rmsnorm) { RMSNorm.forward(a + o.lnf, a + o.rstdF, a + o.resid + L * N * C, p + layout.finalNorm, N, C, config.rmsNormEps) }
    }

    private func layerForward(_ l: Int, training: Bool) {
        let c = config, B = batchSize, T = seqLen, N = B * T, C = c.hiddenSize, F = c.intermediateSize
        let a = acts!.base, p = params.base, w = layout.layers[l], s = slot(l)
        let resIn = a + o.resid + l * N * C, resOut = a + o.resid + (l + 1) * N * C
        let q = a + o.q + s * N * c.qDim, k = a + o.k + s * N * c.kvDim, v = a + o.v + s * N * c.kvDim
        let attnOut = a + o.attnOut + s * N * c.qDim, lse = a + o.lse + s * B * c.numHeads * T
        let resid2 = a + o.resid2 + s * N * C, gate = a + o.gate + s * N * F, up = a + o.up + s * N * F
        let ln = a + o.ln, h = a + o.h

        Profiler.measure(.rmsnorm) { RMSNorm.forward(ln, a + o.rstd1 + l * N, resIn, p + w.inputNorm, N, C, c.rmsNormEps) }
        project(.q_proj, l, training, q, ln, w.qWeight, w.qBias, C, c.qDim, adapter: false)
        project(.k_proj, l, training, k, ln, w.kWeight, w.kBias, C, c.kvDim, adapter: false)
        project(.v_proj, l, training, v, ln, w.vWeight, w.vBias, C, c.kvDim, adapter: false)
        adaptersForward(attentionInputAdapters, l, training, ln, C) { $0 == .q_proj ? (q, c.qDim) : ($0 == .k_proj ? k : v, c.kvDim) }
        Profiler.measure(.rope) { RoPE.forward(q, intsPositions, ropeCos, ropeSin, N, c.numHeads, c.headDim) }
        Profiler.measure(.rope) { RoPE.forward(k, intsPositions, ropeCos, ropeSin, N, c.numKVHeads, c.headDim) }
        Profiler.measure(.attention) { Attention.forward(attnOut, lse, training ? keptAttention(l) : nil, q, k, v,
                                                         hasSegments ? intsSegments : nil, a + o.attnScratch,
                          B, T, c.numHeads, c.numKVHeads, c.headDim, threads: o.threads) }
        resid2.update(from: resIn, count: N * C)
        project(.o_proj, l, training, resid2, attnOut, w.oWeight, nil, c.qDim, C, accumulate: true)
        Profiler.measure(.rmsnorm) { RMSNorm.forward(ln, a + o.rstd2 + l * N, resid2, p + w.postNorm, N, C, c.rmsNormEps) }
        project(.gate_proj, l, training, gate, ln, w.gateWeight, nil, C, F, adapter: false)
        project(.up_proj, l, training, up, ln, w.upWeight, nil, C, F, adapter: false)
        adaptersForward(mlpInputAdapters, l, training, ln, C) { ($0 == .gate_proj ? gate : up, F) }
        Profiler.measure(.swiglu) { SwiGLU.forward(h, gate, up, N * F) }
        resOut.update(from: resid2, count: N * C)
        project(.down_proj, l, training, resOut, h, w.downWeight, nil, F, C, accumulate: true)
    }

    /// out (N, OC) (+)= inp (N, IC) · Wᵀ + b, plus the layer's adapter for `target` if any (unless
    /// `adapter` is false: the caller adds it with its group).
    private func project(_ target: LoRATarget, _ l: Int, _ training: Bool,
                         _ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>,
                         _ weight: Int, _ bias: Int?, _ IC: Int, _ OC: Int, accumulate: Bool = false, adapter: Bool = true) {
        let N = batchSize * seqLen, p = params.base
        Profiler.measure(.linear) { Linear.forward(out, inp, p + weight, bias.map { UnsafePointer(p + $0) }, N, IC, OC, accumulate: accumulate) }
        if adapter { adapterForward(target, l, training, out, inp, IC, OC) }
    }

    /// The adapters of `group`, which all read `inp`: out_t (N, OC_t) += scale · B_t (A_t inp), with
    /// `output(t)` giving out_t and OC_t. With two or more and no dropout in play, their A
    /// products are one sgemm (LoRAAdapters stacks a layer's A's) into one (N, k·r) block;
    /// otherwise one at a time.
    private func adaptersForward(_ group: [LoRATarget], _ l: Int, _ training: Bool, _ inp: UnsafePointer<Float>, _ IC: Int,
                                 _ output: (LoRATarget) -> (UnsafeMutablePointer<Float>, Int)) {
        guard let lora, !group.isEmpty else { return }
        guard group.count > 1 && !(training && lora.config.dropout > 0) else {
            for t in group {
                let (out, OC) = output(t)
                adapterForward(t, l, training, out, inp, IC, OC)
            }
            return
        }
        let N = batchSize * seqLen, r = lora.config.rank, R = group.count * r
        let xa = loraXA(l, group[0])
        Profiler.measure(.lora) {
            LoRA.forwardA(xa, inp, lora.weights.pointer(at: lora.slots[l][group[0].index]!.a), N, IC, R)
            for (i, t) in group.enumerated() {
                let (out, OC) = output(t)
                LoRA.forwardB(out, xa + i * r, R, lora.weights.pointer(at: lora.slots[l][t.index]!.b), N, OC, r,
                              scale: lora.config.scale)
            }
        }
    }

    /// Where the A products of `target`'s adapter in layer l are kept, (N, r); a group's
    /// products fill the blocks from its first target's on, as one (N, k·r) block.
    private func loraXA(_ l: Int, _ target: LoRATarget) -> UnsafeMutablePointer<Float> {
        acts!.base + o.loraXA + (slot(l) * LoRATarget.allCases.count + target.index) * batchSize * seqLen * lora!.config.rank
    }

    /// One adapter on its own: out (N, OC) += scale · B (A dropout(inp)).
    private func adapterForward(_ target: LoRATarget, _ l: Int, _ training: Bool,
                                _ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, _ IC: Int, _ OC: Int) {
        let N = batchSize * seqLen
        guard let lora, let slotAB = lora.slots[l][target.index] else { return }
        let cfg = lora.config, a = acts!.base, r = cfg.rank, xa = loraXA(l, target)
        var xin = inp
        if training && cfg.dropout > 0 {
            Profiler.measure(.lora) { Dropout.forward(a + o.dropIn, inp, tokenKeys!, N, IC, p: cfg.dropout, key: dropKey(l, target)) }
            xin = UnsafePointer(a + o.dropIn)
        }
        Profiler.measure(.lora) { LoRA.forward(out, xa, xin, lora.weights.pointer(at: slotAB.a), lora.weights.pointer(at: slotAB.b),
                     N, IC, OC, r, scale: cfg.scale) }
    }

    private func dropKey(_ l: Int, _ target: LoRATarget) -> UInt64 {
        CounterRandom.key(dropoutKey, UInt64(l), UInt64(target.index))
    }

    // MARK: - Backward

    /// On entry dResid holds ∂L/∂(output of layer l); on exit ∂L/∂(input of layer l), except after
    /// layer 0 when the embedding is frozen: nothing reads that gradient, so it is not finished.
    private func layerBackward(_ l: Int) {
        if recompute { layerForward(l, training: true) }
        let c = config, B = batchSize, T = seqLen, N = B * T, C = c.hiddenSize, F = c.intermediateSize
        let a = acts!.base, p = params.base, w = layout.layers[l], s = slot(l)
        let resIn = a + o.resid + l * N * C
        let q = a + o.q + s * N * c.qDim, k = a + o.k + s * N * c.kvDim, v = a + o.v + s * N * c.kvDim
        let attnOut = a + o.attnOut + s * N * c.qDim, lse = a + o.lse + s * B * c.numHeads * T
        let resid2 = a + o.resid2 + s * N * C, gate = a + o.gate + s * N * F, up = a + o.up + s * N * F
        let ln = a + o.ln, h = a + o.h, dResid = a + o.dResid, dln = a + o.dln
        let dh = a + o.dh, dgate = a + o.dgate, dup = a + o.dup
        let dq = a + o.dq, dk = a + o.dk, dv = a + o.dv, dAttn = a + o.dAttn

        // MLP branch: resOut = resid2 + down(swiglu(gate(ln2), up(ln2))). h = swiglu(...) is not
        // kept per layer. down's input gradient needs only its weights, so it comes first; the
        // SwiGLU backward then rebuilds h in the same pass, and down's weight gradients read it.
        Profiler.measure(.rmsnorm) { RMSNorm.recompute(ln, a + o.rstd2 + l * N, resid2, p + w.postNorm, N, C) }
        // Each activation gradient's first product writes it (no zeroing pass); the rest add.
        Profiler.measure(.linear) { Linear.backward(dh, nil, nil, dResid, h, p + w.downWeight, N, F, C, accumulateInput: false) }
        adapterBackwardInput(.down_proj, l, dh, dResid, F, C)
        Profiler.measure(.swiglu) { SwiGLU.backward(dgate, dup, h, dh, gate, up, N * F) }
        if let dDown = fullGrad(w.downWeight) {
            Profiler.measure(.linear) { Linear.backward(nil, dDown, nil, dResid, h, p + w.downWeight, N, F, C) }
        }
        adapterBackwardWeights(.down_proj, l, h, F)
        projectBackward(.gate_proj, l, dln, dgate, ln, w.gateWeight, nil, C, F, adapter: false, firstInputWriter: true)
        projectBackward(.up_proj, l, dln, dup, ln, w.upWeight, nil, C, F, adapter: false)
        adaptersBackward(mlpInputAdapters, l, dln, ln, C) { ($0 == .gate_proj ? dgate : dup, F) }
        Profiler.measure(.rmsnorm) { RMSNorm.backward(dResid, fullGrad(w.postNorm), dln, resid2, p + w.postNorm, a + o.rstd2 + l * N, N, C) }

        // Attention branch: resid2 = resIn + o(attention(rope(q(ln1)), rope(k(ln1)), v(ln1))).
        projectBackward(.o_proj, l, dAttn, dResid, attnOut, w.oWeight, nil, c.qDim, C, firstInputWriter: true)
        dq.update(repeating: 0, count: N * c.qDim)
        dk.update(repeating: 0, count: N * c.kvDim)
        dv.update(repeating: 0, count: N * c.kvDim)
        Profiler.measure(.attention) { Attention.backward(dq, dk, dv, dAttn, attnOut, lse, keptAttention(l), q, k, v, hasSegments ? intsSegments : nil,
                           a + o.attnScratch, B, T, c.numHeads, c.numKVHeads, c.headDim, threads: o.threads) }
        Profiler.measure(.rope) { RoPE.backward(dq, intsPositions, ropeCos, ropeSin, N, c.numHeads, c.headDim) }
        Profiler.measure(.rope) { RoPE.backward(dk, intsPositions, ropeCos, ropeSin, N, c.numKVHeads, c.headDim) }
        Profiler.measure(.rmsnorm) { RMSNorm.recompute(ln, a + o.rstd1 + l * N, resIn, p + w.inputNorm, N, C) }
        // The first layer's input gradient feeds only the embedding's: with a frozen embedding
        // (LoRA) nothing reads it, so q/k/v and their adapters skip their input products.
        let wantInput = l > 0 || fullGrad(layout.embedding) != nil
        let dlnIn: UnsafeMutablePointer<Float>? = wantInput ? dln : nil
        projectBackward(.q_proj, l, dlnIn, dq, ln, w.qWeight, w.qBias, C, c.qDim, adapter: false, firstInputWriter: true)
        projectBackward(.k_proj, l, dlnIn, dk, ln, w.kWeight, w.kBias, C, c.kvDim, adapter: false)
        projectBackward(.v_proj, l, dlnIn, dv, ln, w.vWeight, w.vBias, C, c.kvDim, adapter: false)
        adaptersBackward(attentionInputAdapters, l, dlnIn, ln, C) { $0 == .q_proj ? (dq, c.qDim) : ($0 == .k_proj ? dk : dv, c.kvDim) }
        if wantInput || fullGrad(w.inputNorm) != nil {
            Profiler.measure(.rmsnorm) { RMSNorm.backward(dResid, fullGrad(w.inputNorm), dln, resIn, p + w.inputNorm, a + o.rstd1 + l * N, N, C) }
        }
    }

    /// dinp (N, IC) += ∂/∂inp of `project` (= when `firstInputWriter`: nothing has written dinp
    /// yet); weight, bias and (unless `adapter` is false) adapter gradients accumulate.
    private func projectBackward(_ target: LoRATarget, _ l: Int, _ dinp: UnsafeMutablePointer<Float>?,
                                 _ dout: UnsafePointer<Float>, _ inp: UnsafePointer<Float>,
                                 _ weight: Int, _ bias: Int?, _ IC: Int, _ OC: Int, adapter: Bool = true,
                                 firstInputWriter: Bool = false) {
        let N = batchSize * seqLen, p = params.base
        Profiler.measure(.linear) { Linear.backward(dinp, fullGrad(weight), fullGrad(bias), dout, inp, p + weight, N, IC, OC,
                                                    accumulateInput: !firstInputWriter) }
        if adapter { adapterBackward(target, l, dinp, dout, inp, IC, OC) }
    }

    /// Backward of `adaptersForward`, with `output(t)` giving ∂/∂out_t and OC_t: the B gradients
    /// and each adapter's ∂/∂xa into one (N, k·r) block, then the stacked A's gradient and the
    /// input gradient in one sgemm each.
    private func adaptersBackward(_ group: [LoRATarget], _ l: Int, _ dinp: UnsafeMutablePointer<Float>?,
                                  _ inp: UnsafePointer<Float>, _ IC: Int,
                                  _ output: (LoRATarget) -> (UnsafeMutablePointer<Float>, Int)) {
        guard let lora, !group.isEmpty else { return }
        guard group.count > 1 && lora.config.dropout == 0 else {
            for t in group {
                let (dout, OC) = output(t)
                adapterBackward(t, l, dinp, dout, inp, IC, OC)
            }
            return
        }
        let N = batchSize * seqLen, r = lora.config.rank, R = group.count * r
        let xa = loraXA(l, group[0]), dxa = acts!.base + o.loraDXA
        let a0 = lora.slots[l][group[0].index]!.a
        Profiler.measure(.lora) {
            for (i, t) in group.enumerated() {
                let b = lora.slots[l][t.index]!.b, (dout, OC) = output(t)
                LoRA.backwardB(lora.grads.pointer(at: b), dxa + i * r, R, dout, xa + i * r, R, lora.weights.pointer(at: b),
                               N, OC, r, scale: lora.config.scale, scratch: acts!.base + o.loraPartial, scratchThreads: o.threads)
            }
            LoRA.backwardA(dinp, lora.grads.pointer(at: a0), dxa, inp, lora.weights.pointer(at: a0), N, IC, R)
        }
    }

    /// Backward of `adapterForward`; dinp nil when no input gradient is wanted.
    private func adapterBackward(_ target: LoRATarget, _ l: Int, _ dinp: UnsafeMutablePointer<Float>?,
                                 _ dout: UnsafePointer<Float>, _ inp: UnsafePointer<Float>, _ IC: Int, _ OC: Int) {
        adapterBackwardInput(target, l, dinp, dout, IC, OC)
        adapterBackwardWeights(target, l, inp, IC)
    }

    /// The half of `adapterBackward` that needs no layer input: dB, the adapter's ∂/∂(A x) (left in
    /// the loraDXA scratch for `adapterBackwardWeights`), and dinp (N, IC) += its part, through
    /// the dropout mask when dropout is on.
    private func adapterBackwardInput(_ target: LoRATarget, _ l: Int, _ dinp: UnsafeMutablePointer<Float>?,
                                      _ dout: UnsafePointer<Float>, _ IC: Int, _ OC: Int) {
        guard let lora, let slotAB = lora.slots[l][target.index] else { return }
        let N = batchSize * seqLen, cfg = lora.config, a = acts!.base, r = cfg.rank, dxa = a + o.loraDXA
        let A = lora.weights.pointer(at: slotAB.a), Bw = lora.weights.pointer(at: slotAB.b)
        Profiler.measure(.lora) {
            LoRA.backwardB(lora.grads.pointer(at: slotAB.b), dxa, r, dout, loraXA(l, target), r, Bw, N, OC, r, scale: cfg.scale,
                           scratch: a + o.loraPartial, scratchThreads: o.threads)
            guard let dinp else { return }
            if cfg.dropout > 0 {
                let dDrop = a + o.dropGrad
                dDrop.update(repeating: 0, count: N * IC)
                LoRA.backwardInput(dDrop, dxa, A, N, IC, r)
                Dropout.backward(dinp, dDrop, tokenKeys!, N, IC, p: cfg.dropout, key: dropKey(l, target))
            } else {
                LoRA.backwardInput(dinp, dxa, A, N, IC, r)
            }
        }
    }

    /// The other half: dA (r, IC) += ∂/∂(A x)ᵀ · inp, with inp dropped out again as in forward.
    private func adapterBackwardWeights(_ target: LoRATarget, _ l: Int, _ inp: UnsafePointer<Float>, _ IC: Int) {
        guard let lora, let slotAB = lora.slots[l][target.index] else { return }
        let N = batchSize * seqLen, cfg = lora.config, a = acts!.base, r = cfg.rank
        Profiler.measure(.lora) {
            var xin = inp
            if cfg.dropout > 0 {
                Dropout.forward(a + o.dropIn, inp, tokenKeys!, N, IC, p: cfg.dropout, key: dropKey(l, target))
                xin = UnsafePointer(a + o.dropIn)
            }
            LoRA.backwardA(nil, lora.grads.pointer(at: slotAB.a), a + o.loraDXA, xin, lora.weights.pointer(at: slotAB.a), N, IC, r)
        }
    }
}
