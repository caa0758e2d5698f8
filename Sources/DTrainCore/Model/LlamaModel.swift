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
    /// Called after the LM head's backward (full fine-tuning: its weight gradient is then
    /// complete, before any layer's backward), so the trainer can start reducing it first.
    public var headBackwardDone: (() -> Void)?
    /// When set, receives the embedding lookup's gradient as rows, ∂L/∂(embedded token n) (N, C)
    /// for tokens (N), instead of it being added into the embedding's gradient: the trainer
    /// then reduces those rows itself while the embedding's dense gradient is already in flight.
    public var embeddingGradientRows: ((UnsafePointer<Float>, UnsafePointer<Int32>, Int) -> Void)?
    /// Whether layer activations are recomputed during backward instead of stored.
    public private(set) var recompute = false

    private var acts: FloatBuffer?
    private var o = ActivationOffsets()
    private var ints: UnsafeMutablePointer<Int32>?
    private var tokenKeys: UnsafeMutablePointer<UInt64>?  // (B·T) dropout row keys
    private var ropeCos: [Float] = []
    private var ropeSin: [Float] = []
    private var hasSegments = false
    /// Whether the pass running is a training one (dropout on, attention probabilities kept).
    private var passIsTraining = false
    private var dropoutActive: Bool { passIsTraining && (lora?.config.dropout ?? 0) > 0 }
    private var activeRows = 0
    /// Each layer's projections, grouped by the input they read: q/k/v the attention norm's
    /// output, o the attention output, gate/up the MLP norm's output, down the SwiGLU output.
    /// `enableTraining` marks their adapters, so that no step builds a list.
    private var attentionInputs: ProjectionGroup
    private var attentionOutput: ProjectionGroup
    private var mlpInputs: ProjectionGroup
    private var mlpOutput: ProjectionGroup

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
        attentionInputs = ProjectionGroup([.q_proj, .k_proj, .v_proj], config: config)
        attentionOutput = ProjectionGroup([.o_proj], config: config)
        mlpInputs = ProjectionGroup([.gate_proj, .up_proj], config: config)
        mlpOutput = ProjectionGroup([.down_proj], config: config)
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
        func markAdapters(_ group: inout ProjectionGroup) { group.adapted = group.targets.filter { targets.contains($0) } }
        markAdapters(&attentionInputs); markAdapters(&attentionOutput)
        markAdapters(&mlpInputs); markAdapters(&mlpOutput)
    }

    /// Adds each adapter's scale · B·A into the weight it wraps and drops the adapters (and the
    /// training state): the model then computes what base and adapters did, with no adapter
    /// work per token. For inference and export only.
    public func mergeAdapters() {
        guard let lora else { return }
        let p = params.base, r = lora.config.rank
        for l in 0..<config.numLayers {
            for t in LoRATarget.allCases {
                guard let slot = lora.slots[l][t.index] else { continue }
                let (IC, OC) = t.dims(config)
                // W (OC, IC) += scale · B (OC, r) · A (r, IC)
                Parallel.sgemm(false, false, OC, IC, r, lora.config.scale, lora.weights.pointer(at: slot.b), r,
                               lora.weights.pointer(at: slot.a), IC, 1, p + layout.layers[l].weight(t), IC)
            }
        }
        self.lora = nil
        method = nil
        attentionInputs.adapted = []; attentionOutput.adapted = []
        mlpInputs.adapted = []; mlpOutput.adapted = []
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
        var dropMasks = 0  // (S, 7, N, ⌈IC_t/32⌉) UInt32 words: each adapter's dropout mask, bit set = kept
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
        var dropIn = 0     // (N, max(C, F, NH·HD)) an adapter's dropped-out input (r not a multiple of 8)
        var dropGrad = 0   // (N, max(C, F, NH·HD)) ∂L/∂(dropped-out input) (r not a multiple of 8)
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
                                        loraRank: Int?, loraDropout: Bool, recompute: Bool) -> Int {
        offsets(config: config, B: B, T: T, loraRank: loraRank, loraDropout: loraDropout, recompute: recompute).total
    }

    static func offsets(config c: LlamaConfig, B: Int, T: Int, loraRank: Int?, loraDropout: Bool, recompute: Bool) -> ActivationOffsets {
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
        // UInt32 words stored in float slots (same size); 0.6% of the input's floats at p > 0.
        o.dropMasks = take(loraDropout ? S * N * dropMaskWordsPerToken(c) : 0)
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
        // The dropped-out input and its gradient, written out only when the fused kernels cannot run.
        let writesDropped = loraDropout && !LoRA.fusesDropout(rank: r)
        o.dropIn = take(writesDropped ? N * max(C, F, c.qDim) : 0)
        o.dropGrad = take(writesDropped ? N * max(C, F, c.qDim) : 0)
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
        let dropout: Bool = { if case .lora(let c)? = method { return c.dropout > 0 } else { return false } }()
        o = Self.offsets(config: config, B: B, T: T, loraRank: rank, loraDropout: dropout, recompute: recompute)
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
        headBackwardDone?()
        let dResid = a + o.dResid
        dResid.update(repeating: 0, count: N * C)
        Profiler.measure(.rmsnorm) { RMSNorm.backward(dResid, fullGrad(layout.finalNorm), dlnf, a + o.resid + L * N * C,
                         p + layout.finalNorm, a + o.rstdF, N, C) }
        for l in stride(from: L - 1, through: 0, by: -1) {
            layerBackward(l)
            layerBackwardDone?(l)
        }
        if let rows = embeddingGradientRows, method == .full {
            rows(dResid, intsTokens, N)
        } else if let g = fullGrad(layout.embedding) {
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
        passIsTraining = training
        let N = batchSize * seqLen, C = config.hiddenSize, L = config.numLayers
        let a = acts!.base, p = params.base
        Profiler.measure(.embedding) { Embedding.forward(a + o.resid, intsTokens, p + layout.embedding, N, C) }
        for l in 0..<L { layerForward(l) }
        Profiler.measure(.rmsnorm) { RMSNorm.forward(a + o.lnf, a + o.rstdF, a + o.resid + L * N * C, p + layout.finalNorm, N, C, config.rmsNormEps) }
    }

    /// Layer l's activations, kept for backward (or rebuilt by it, with `recompute`).
    private func layerForward(_ l: Int) {
        let c = config, B = batchSize, T = seqLen, N = B * T, C = c.hiddenSize, F = c.intermediateSize
        let a = acts!.base, p = params.base, w = layout.layers[l], s = slot(l)
        let resIn = a + o.resid + l * N * C, resOut = a + o.resid + (l + 1) * N * C
        let q = a + o.q + s * N * c.qDim, k = a + o.k + s * N * c.kvDim, v = a + o.v + s * N * c.kvDim
        let attnOut = a + o.attnOut + s * N * c.qDim, lse = a + o.lse + s * B * c.numHeads * T
        let resid2 = a + o.resid2 + s * N * C, gate = a + o.gate + s * N * F, up = a + o.up + s * N * F
        let ln = a + o.ln, h = a + o.h

        Profiler.measure(.rmsnorm) { RMSNorm.forward(ln, a + o.rstd1 + l * N, resIn, p + w.inputNorm, N, C, c.rmsNormEps) }
        project(attentionInputs, l, from: ln)
        Profiler.measure(.rope) { RoPE.forward(q, intsPositions, ropeCos, ropeSin, N, c.numHeads, c.headDim) }
        Profiler.measure(.rope) { RoPE.forward(k, intsPositions, ropeCos, ropeSin, N, c.numKVHeads, c.headDim) }
        Profiler.measure(.attention) { Attention.forward(attnOut, lse, passIsTraining ? keptAttention(l) : nil, q, k, v,
                                                         hasSegments ? intsSegments : nil, a + o.attnScratch,
                          B, T, c.numHeads, c.numKVHeads, c.headDim, threads: o.threads) }
        resid2.update(from: resIn, count: N * C)
        project(attentionOutput, l, from: attnOut)
        Profiler.measure(.rmsnorm) { RMSNorm.forward(ln, a + o.rstd2 + l * N, resid2, p + w.postNorm, N, C, c.rmsNormEps) }
        project(mlpInputs, l, from: ln)
        Profiler.measure(.swiglu) { SwiGLU.forward(h, gate, up, N * F) }
        resOut.update(from: resid2, count: N * C)
        project(mlpOutput, l, from: h)
    }

    // MARK: - Backward

    /// On entry dResid holds ∂L/∂(output of layer l); on exit ∂L/∂(input of layer l), except after
    /// layer 0 when the embedding is frozen: nothing reads that gradient, so it is not finished.
    private func layerBackward(_ l: Int) {
        if recompute { layerForward(l) }
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
        projectBackwardInput(mlpOutput, l, into: dh)
        Profiler.measure(.swiglu) { SwiGLU.backward(dgate, dup, h, dh, gate, up, N * F) }
        projectBackwardWeights(mlpOutput, l, from: h)
        projectBackward(mlpInputs, l, into: dln, from: ln)
        Profiler.measure(.rmsnorm) { RMSNorm.backward(dResid, fullGrad(w.postNorm), dln, resid2, p + w.postNorm, a + o.rstd2 + l * N, N, C) }

        // Attention branch: resid2 = resIn + o(attention(rope(q(ln1)), rope(k(ln1)), v(ln1))).
        projectBackward(attentionOutput, l, into: dAttn, from: attnOut)
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
        projectBackward(attentionInputs, l, into: wantInput ? dln : nil, from: ln)
        if wantInput || fullGrad(w.inputNorm) != nil {
            Profiler.measure(.rmsnorm) { RMSNorm.backward(dResid, fullGrad(w.inputNorm), dln, resIn, p + w.inputNorm, a + o.rstd1 + l * N, N, C) }
        }
    }

    // MARK: - Projections

    /// Where projection `t` of layer l writes its output, and where backward finds the gradient
    /// of that output: q/k/v/gate/up their own tensors; o_proj and down_proj the residual stream,
    /// whose copy they add onto.
    private func projectionTensors(_ t: LoRATarget, _ l: Int) -> (out: UnsafeMutablePointer<Float>, dout: UnsafeMutablePointer<Float>) {
        let a = acts!.base, N = batchSize * seqLen, s = slot(l), c = config
        switch t {
        case .q_proj: return (a + o.q + s * N * c.qDim, a + o.dq)
        case .k_proj: return (a + o.k + s * N * c.kvDim, a + o.dk)
        case .v_proj: return (a + o.v + s * N * c.kvDim, a + o.dv)
        case .o_proj: return (a + o.resid2 + s * N * c.hiddenSize, a + o.dResid)
        case .gate_proj: return (a + o.gate + s * N * c.intermediateSize, a + o.dgate)
        case .up_proj: return (a + o.up + s * N * c.intermediateSize, a + o.dup)
        case .down_proj: return (a + o.resid + (l + 1) * N * c.hiddenSize, a + o.dResid)
        }
    }

    /// out_t (N, OC_t) (+)= inp (N, IC) · W_tᵀ + b_t for each projection of the group, then each
    /// one's adapter: out_t += scale · B_t A_t dropout(inp). With two or more adapters and no
    /// dropout in play, their A products are one sgemm (LoRAAdapters stacks a layer's A's) into
    /// one (N, k·r) block; with dropout each adapter reads its own dropped-out input.
    private func project(_ group: ProjectionGroup, _ l: Int, from inp: UnsafePointer<Float>) {
        let N = batchSize * seqLen, p = params.base, w = layout.layers[l], IC = group.inFeatures
        for t in group.targets {
            let out = projectionTensors(t, l).out, OC = t.dims(config).outFeatures
            Profiler.measure(.linear) { Linear.forward(out, inp, p + w.weight(t), w.bias(t).map { UnsafePointer(p + $0) }, N, IC, OC,
                                                       accumulate: group.addsToOutput) }
        }
        guard let lora, !group.adapted.isEmpty else { return }
        let cfg = lora.config, a = acts!.base, r = cfg.rank
        if group.adapted.count > 1 && !dropoutActive {
            let R = group.adapted.count * r, xa = loraXA(l, group.adapted[0])  // (N, R)
            Profiler.measure(.lora) {
                LoRA.forwardA(xa, inp, lora.weights.pointer(at: lora.slots[l][group.adapted[0].index]!.a), N, IC, R)
                for (i, t) in group.adapted.enumerated() {
                    LoRA.forwardB(projectionTensors(t, l).out, xa + i * r, R, lora.weights.pointer(at: lora.slots[l][t.index]!.b),
                                  N, t.dims(config).outFeatures, r, scale: cfg.scale)
                }
            }
            return
        }
        for t in group.adapted {
            let slotAB = lora.slots[l][t.index]!
            if dropoutActive && LoRA.fusesDropout(rank: r) {
                Profiler.measure(.lora) {
                    let xa = loraXA(l, t)
                    LoRA.forwardDropped(xa, dropMask(l, t), inp, tokenKeys!, lora.weights.pointer(at: slotAB.a), N, IC, r,
                                        p: cfg.dropout, key: dropKey(l, t))
                    LoRA.forwardB(projectionTensors(t, l).out, xa, r, lora.weights.pointer(at: slotAB.b), N, t.dims(config).outFeatures, r,
                                  scale: cfg.scale)
                }
                continue
            }
            var xin = inp
            if dropoutActive {
                Profiler.measure(.dropout) { Dropout.forward(a + o.dropIn, dropMask(l, t), inp, tokenKeys!, N, IC, p: cfg.dropout, key: dropKey(l, t)) }
                xin = UnsafePointer(a + o.dropIn)
            }
            Profiler.measure(.lora) {
                LoRA.forward(projectionTensors(t, l).out, loraXA(l, t), xin, lora.weights.pointer(at: slotAB.a),
                             lora.weights.pointer(at: slotAB.b), N, IC, t.dims(config).outFeatures, r, scale: cfg.scale)
            }
        }
    }

    /// Backward of `project`: the input gradient, then the weights', adapters' and biases'.
    private func projectBackward(_ group: ProjectionGroup, _ l: Int, into dinp: UnsafeMutablePointer<Float>?,
                                 from inp: UnsafePointer<Float>) {
        projectBackwardInput(group, l, into: dinp)
        projectBackwardWeights(group, l, from: inp)
    }

    /// The half of `projectBackward` that needs no layer input: dinp (N, IC) = Σ_t ∂L/∂out_t · W_t
    /// (the first product writes it, so it needs no zeroing), plus each adapter's part through
    /// its dropout mask; the adapters' dB and their ∂L/∂(A x), which stay in the loraDXA scratch
    /// (one (N, r) block per adapter, or one (N, k·r) block when stacked) for the other half.
    /// dinp nil when no input gradient is wanted.
    private func projectBackwardInput(_ group: ProjectionGroup, _ l: Int, into dinp: UnsafeMutablePointer<Float>?) {
        let N = batchSize * seqLen, p = params.base, w = layout.layers[l], IC = group.inFeatures
        if let dinp {
            for (i, t) in group.targets.enumerated() {
                let dout = projectionTensors(t, l).dout, OC = t.dims(config).outFeatures
                Profiler.measure(.linear) { Linear.backwardInput(dinp, dout, p + w.weight(t), N, IC, OC, accumulate: i > 0) }
            }
        }
        guard let lora, !group.adapted.isEmpty else { return }
        let cfg = lora.config, a = acts!.base, r = cfg.rank, dxa = a + o.loraDXA
        let stacked = group.adapted.count > 1 && cfg.dropout == 0
        let R = stacked ? group.adapted.count * r : r, stackedXA = loraXA(l, group.adapted[0])
        for (i, t) in group.adapted.enumerated() {
            let slotAB = lora.slots[l][t.index]!, dout = projectionTensors(t, l).dout, OC = t.dims(config).outFeatures
            let dxaT = stacked ? dxa + i * r : dxa + i * N * r, xaT = stacked ? stackedXA + i * r : loraXA(l, t)
            Profiler.measure(.lora) { LoRA.backwardB(lora.grads.pointer(at: slotAB.b), dxaT, R, dout, xaT, R, lora.weights.pointer(at: slotAB.b),
                                                     N, OC, r, scale: cfg.scale, scratch: a + o.loraPartial, scratchThreads: o.threads) }
            guard let dinp, !stacked else { continue }
            let A = lora.weights.pointer(at: slotAB.a)
            if cfg.dropout > 0 && LoRA.fusesDropout(rank: r) {
                Profiler.measure(.lora) { LoRA.backwardInputDropped(dinp, dxaT, dropMask(l, t), A, N, IC, r, p: cfg.dropout) }
            } else if cfg.dropout > 0 {
                let dDrop = a + o.dropGrad
                Profiler.measure(.lora) { LoRA.backwardInput(dDrop, dxaT, A, N, IC, r, accumulate: false) }
                Profiler.measure(.dropout) { Dropout.backward(dinp, dDrop, dropMask(l, t), N, IC, p: cfg.dropout) }
            } else {
                Profiler.measure(.lora) { LoRA.backwardInput(dinp, dxaT, A, N, IC, r) }
            }
        }
        if stacked, let dinp {
            Profiler.measure(.lora) { LoRA.backwardInput(dinp, dxa, lora.weights.pointer(at: lora.slots[l][group.adapted[0].index]!.a), N, IC, R) }
        }
    }

    /// The other half: dW_t (OC_t, IC) += ∂L/∂out_tᵀ · inp and db_t (full fine-tuning), and each
    /// adapter's dA (r, IC) += ∂L/∂(A x)ᵀ · dropout(inp), with inp dropped out again as in forward.
    private func projectBackwardWeights(_ group: ProjectionGroup, _ l: Int, from inp: UnsafePointer<Float>) {
        let N = batchSize * seqLen, w = layout.layers[l], IC = group.inFeatures
        if method == .full {
            for t in group.targets {
                let dout = projectionTensors(t, l).dout, OC = t.dims(config).outFeatures
                Profiler.measure(.linear) { Linear.backwardWeights(fullGrad(w.weight(t))!, fullGrad(w.bias(t)), dout, inp, N, IC, OC) }
            }
        }
        guard let lora, !group.adapted.isEmpty else { return }
        let cfg = lora.config, a = acts!.base, r = cfg.rank, dxa = a + o.loraDXA
        if group.adapted.count > 1 && cfg.dropout == 0 {
            let a0 = lora.slots[l][group.adapted[0].index]!.a
            Profiler.measure(.lora) { LoRA.backwardA(nil, lora.grads.pointer(at: a0), dxa, inp, lora.weights.pointer(at: a0), N, IC, group.adapted.count * r) }
            return
        }
        for (i, t) in group.adapted.enumerated() {
            let slotAB = lora.slots[l][t.index]!
            if cfg.dropout > 0 && LoRA.fusesDropout(rank: r) {
                Profiler.measure(.lora) {
                    LoRA.backwardADropped(lora.grads.pointer(at: slotAB.a), dxa + i * N * r, inp, dropMask(l, t), N, IC, r, p: cfg.dropout)
                }
                continue
            }
            var xin = inp
            if cfg.dropout > 0 {
                Profiler.measure(.dropout) { Dropout.reapply(a + o.dropIn, inp, dropMask(l, t), N, IC, p: cfg.dropout) }
                xin = UnsafePointer(a + o.dropIn)
            }
            Profiler.measure(.lora) { LoRA.backwardA(nil, lora.grads.pointer(at: slotAB.a), dxa + i * N * r, xin, lora.weights.pointer(at: slotAB.a), N, IC, r) }
        }
    }

    /// Where the A products of `target`'s adapter in layer l are kept, (N, r); a group's
    /// products fill the blocks from its first target's on, as one (N, k·r) block.
    private func loraXA(_ l: Int, _ target: LoRATarget) -> UnsafeMutablePointer<Float> {
        acts!.base + o.loraXA + (slot(l) * LoRATarget.allCases.count + target.index) * batchSize * seqLen * lora!.config.rank
    }

    private func dropKey(_ l: Int, _ target: LoRATarget) -> UInt64 {
        CounterRandom.key(dropoutKey, UInt64(l), UInt64(target.index))
    }

    /// Mask words per token for all seven targets of a layer (each ⌈IC_t/32⌉).
    static func dropMaskWordsPerToken(_ c: LlamaConfig) -> Int {
        LoRATarget.allCases.reduce(0) { $0 + Dropout.wordsPerRow($1.dims(c).inFeatures) }
    }

    /// Where the dropout mask of `target`'s adapter in layer l is kept, (N, ⌈IC/32⌉) words: drawn
    /// by forward, read by backward (rebuilt by the recomputed forward with `recompute`).
    private func dropMask(_ l: Int, _ target: LoRATarget) -> UnsafeMutablePointer<UInt32> {
        let N = batchSize * seqLen
        let before = LoRATarget.allCases.prefix(target.index).reduce(0) { $0 + Dropout.wordsPerRow($1.dims(config).inFeatures) }
        let words = acts!.base + o.dropMasks + slot(l) * N * Self.dropMaskWordsPerToken(config) + N * before
        // The region holds only mask words, so binding it to UInt32 (free at run time) is sound.
        return UnsafeMutableRawPointer(words).bindMemory(to: UInt32.self, capacity: N * Dropout.wordsPerRow(target.dims(config).inFeatures))
    }
}

/// A layer's projections that read one input, each a dense product with the LoRA adapter on it
/// when the run trains one: `LlamaModel.project` runs a group forward, `projectBackward` (or its
/// two halves) backward.
struct ProjectionGroup {
    /// The projections, in the order their products run.
    let targets: [LoRATarget]
    /// Those that carry an adapter, in the order their A's are stacked.
    var adapted: [LoRATarget] = []
    /// In features, shared by the group.
    let inFeatures: Int
    /// o_proj and down_proj add onto the residual stream (their output holds its copy); the
    /// others write their output.
    let addsToOutput: Bool

    init(_ targets: [LoRATarget], config: LlamaConfig) {
        self.targets = targets
        inFeatures = targets[0].dims(config).inFeatures
        addsToOutput = targets == [.o_proj] || targets == [.down_proj]
    }
}
