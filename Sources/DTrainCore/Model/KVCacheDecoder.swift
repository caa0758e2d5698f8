import CBLAS
import Foundation

/// Inference with a key/value cache: each row (one sequence being generated) keeps every layer's
/// keys and values of the tokens it has seen, so a new token costs one token's forward pass
/// instead of the whole sequence's.
///
/// A pass appends tokens to rows: a prompt to one row (up to `chunk` tokens per pass, longer
/// prompts in several), or one token to each of several rows (batched decoding, where the
/// projections become one product over the rows). The kernels are the training model's
/// (projections through the BLAS, RMSNorm, RoPE, SwiGLU), so the logits match `LlamaModel`'s
/// up to the order of summation; LoRA adapters on the model are applied on the fly.
/// Everything is allocated by `init`; a pass allocates nothing.
public final class KVCacheDecoder {
    public let model: LlamaModel
    /// Rows (sequences) the cache holds.
    public let rows: Int
    /// Tokens each row can hold: prompt and generated.
    public let context: Int
    /// Most tokens one pass takes (a prompt chunk, or one token per row).
    public let chunk: Int
    /// Tokens cached per row.
    public private(set) var lengths: [Int]

    /// One appended run of tokens: `count` tokens for row `row`, from the pass's token list.
    public struct Segment: Sendable {
        public var row: Int, count: Int
        public init(row: Int, count: Int) { self.row = row; self.count = count }
    }

    private let cache: FloatBuffer   // keys then values: (2, L, rows, context, KVH·HD)
    private let acts: FloatBuffer
    private var o = Offsets()
    private let ints: UnsafeMutablePointer<Int32>  // (chunk) token ids, then (chunk) positions
    private let ropeCos: [Float], ropeSin: [Float]
    private let workers: Int

    /// Offsets into `acts`. N = `chunk` tokens, S = `rows` segments at most.
    private struct Offsets {
        var x = 0        // (N, C) residual stream
        var ln = 0       // (N, C) a norm's output
        var rstd = 0     // (N) 1/rms, unused after the norm
        var q = 0        // (N, NH·HD) queries after RoPE
        var k = 0        // (N, KVH·HD) new keys after RoPE (copied into the cache)
        var v = 0        // (N, KVH·HD) new values
        var attn = 0     // (N, NH·HD) attention output
        var gate = 0     // (N, F)
        var up = 0       // (N, F)
        var h = 0        // (N, F) SwiGLU output
        var xa = 0       // (N, r) an adapter's A·x
        var last = 0     // (S, C) each segment's last residual row
        var lastNorm = 0 // (S, C) the same, final-normed
        var lastRstd = 0 // (S)
        var logits = 0   // (S, V) logits after each segment's last token
        var scores = 0   // (workers, N, context) attention scores, one block per worker
        var total = 0
    }

    /// - Parameters: rows: sequences held at once; context: tokens per row (prompt and answer);
    ///   chunk: tokens per pass (at least `rows`, so that one token per row fits one pass).
    public init(model: LlamaModel, rows: Int, context: Int, chunk: Int = 256) {
        precondition(rows > 0 && context > 1, "KVCacheDecoder: rows \(rows), context \(context)")
        let c = model.config
        self.model = model
        self.rows = rows
        self.context = context
        self.chunk = max(chunk, rows)
        lengths = Array(repeating: 0, count: rows)
        workers = Parallel.threads
        let N = self.chunk, C = c.hiddenSize, F = c.intermediateSize, r = model.lora?.config.rank ?? 0
        var at = 0
        func take(_ n: Int) -> Int { defer { at += (n + 15) / 16 * 16 }; return at }
        o.x = take(N * C); o.ln = take(N * C); o.rstd = take(N)
        o.q = take(N * c.qDim); o.k = take(N * c.kvDim); o.v = take(N * c.kvDim); o.attn = take(N * c.qDim)
        o.gate = take(N * F); o.up = take(N * F); o.h = take(N * F); o.xa = take(N * r)
        o.last = take(rows * C); o.lastNorm = take(rows * C); o.lastRstd = take(rows)
        o.logits = take(rows * c.vocabSize)
        o.scores = take(workers * N * context)
        o.total = at
        acts = FloatBuffer(count: o.total)
        cache = FloatBuffer(count: 2 * c.numLayers * rows * context * c.kvDim)
        ints = .allocate(capacity: 2 * N)
        ints.initialize(repeating: 0, count: 2 * N)
        (ropeCos, ropeSin) = RoPE.makeTables(maxPositions: context, headDim: c.headDim, theta: c.ropeTheta)
    }

    deinit { ints.deallocate() }

    /// Forgets row `row`'s tokens (a new sequence starts there).
    public func reset(row: Int) { lengths[row] = 0 }

    /// Keeps only the first `count` of row `row`'s tokens (a conversation continued after a
    /// shared beginning).
    public func truncate(row: Int, to count: Int) {
        precondition(count <= lengths[row], "KVCacheDecoder: row \(row) holds \(lengths[row]) tokens, not \(count)")
        lengths[row] = count
    }

    /// Forgets every row's tokens.
    public func resetAll() { for b in 0..<rows { lengths[b] = 0 } }

    /// Appends `tokens` to the rows named by `segments` (their counts summing to `tokens.count`,
    /// at most `chunk`, each row at most once) and returns the logits after each segment's last
    /// token: (segments.count, V), valid until the next pass.
    public func append(_ tokens: [Int32], segments: [Segment]) -> UnsafePointer<Float> {
        let c = model.config, C = c.hiddenSize, a = acts.base, p = model.params.base
        runLayers(tokens, segments)
        // Only each segment's last token needs logits.
        var end = 0
        for (si, s) in segments.enumerated() {
            end += s.count
            (a + o.last + si * C).update(from: a + o.x + (end - 1) * C, count: C)
        }
        let S = segments.count
        RMSNorm.forward(a + o.lastNorm, a + o.lastRstd, a + o.last, p + model.layout.finalNorm, S, C, c.rmsNormEps)
        Linear.forward(a + o.logits, a + o.lastNorm, p + model.layout.lmHead, nil, S, C, c.vocabSize)
        return UnsafePointer(a + o.logits)
    }

    /// Appends as `append` does and returns every appended token's final-normed hidden state,
    /// (tokens.count, C) in the pass's token order, valid until the next pass: the LM head's input,
    /// for scoring each position (CrossEntropyHead) rather than sampling after the last.
    public func appendReturningHidden(_ tokens: [Int32], segments: [Segment]) -> UnsafePointer<Float> {
        let c = model.config, a = acts.base
        runLayers(tokens, segments)
        RMSNorm.forward(a + o.ln, a + o.rstd, a + o.x, model.params.base + model.layout.finalNorm, tokens.count, c.hiddenSize, c.rmsNormEps)
        return UnsafePointer(a + o.ln)
    }

    /// Makes row `to` hold the first `count` cached tokens of row `from` (a shared prompt
    /// computed once, continued differently in each row).
    public func copyPrefix(from: Int, to: Int, count: Int) {
        precondition(count <= lengths[from] && from != to, "KVCacheDecoder: row \(from) holds \(lengths[from]) tokens, not \(count)")
        let n = count * model.config.kvDim
        for l in 0..<model.config.numLayers {
            cached(false, l, to).update(from: cached(false, l, from), count: n)
            cached(true, l, to).update(from: cached(true, l, from), count: n)
        }
        lengths[to] = count
    }

    /// The layers over a pass's tokens: leaves the residual stream in `o.x` and the new keys
    /// and values in the rows' caches.
    private func runLayers(_ tokens: [Int32], _ segments: [Segment]) {
        let c = model.config, N = tokens.count, C = c.hiddenSize, F = c.intermediateSize, L = c.numLayers
        precondition(N > 0 && N <= chunk && segments.count <= rows, "KVCacheDecoder: \(N) tokens in \(segments.count) segments exceed the pass size \(chunk)")
        precondition(segments.reduce(0) { $0 + $1.count } == N, "KVCacheDecoder: segment counts do not add up to the tokens")
        let a = acts.base, p = model.params.base, V = Int32(c.vocabSize)
        let positions = ints + chunk
        var i = 0
        for s in segments {
            precondition(s.count > 0 && lengths[s.row] + s.count <= context,
                         "KVCacheDecoder: row \(s.row) would hold \(lengths[s.row] + s.count) tokens; its context is \(context)")
            for j in 0..<s.count {
                precondition(tokens[i] >= 0 && tokens[i] < V, "KVCacheDecoder: token id \(tokens[i]) is outside the vocabulary")
                ints[i] = tokens[i]
                positions[i] = Int32(lengths[s.row] + j)
                i += 1
            }
        }
        let x = a + o.x, ln = a + o.ln, q = a + o.q, k = a + o.k, v = a + o.v, attn = a + o.attn
        let gate = a + o.gate, up = a + o.up, h = a + o.h
        Embedding.forward(x, ints, p + model.layout.embedding, N, C)
        for l in 0..<L {
            let w = model.layout.layers[l]
            RMSNorm.forward(ln, a + o.rstd, x, p + w.inputNorm, N, C, c.rmsNormEps)
            project(.q_proj, l, q, from: ln, N)
            project(.k_proj, l, k, from: ln, N)
            project(.v_proj, l, v, from: ln, N)
            RoPE.forward(q, positions, ropeCos, ropeSin, N, c.numHeads, c.headDim)
            RoPE.forward(k, positions, ropeCos, ropeSin, N, c.numKVHeads, c.headDim)
            store(layer: l, segments)
            attend(layer: l, segments)
            project(.o_proj, l, x, from: attn, N)
            RMSNorm.forward(ln, a + o.rstd, x, p + w.postNorm, N, C, c.rmsNormEps)
            project(.gate_proj, l, gate, from: ln, N)
            project(.up_proj, l, up, from: ln, N)
            SwiGLU.forward(h, gate, up, N * F)
            project(.down_proj, l, x, from: h, N)
        }
        for s in segments { lengths[s.row] += s.count }
    }

    // MARK: - Layer pieces

    /// out (N, OC) (+)= inp · W_tᵀ + b_t, plus the adapter's scale · B A inp when the model has
    /// one on `t`; o_proj and down_proj add onto the residual stream.
    private func project(_ t: LoRATarget, _ l: Int, _ out: UnsafeMutablePointer<Float>,
                         from inp: UnsafePointer<Float>, _ N: Int) {
        let p = model.params.base, w = model.layout.layers[l], (IC, OC) = t.dims(model.config)
        Linear.forward(out, inp, p + w.weight(t), w.bias(t).map { UnsafePointer(p + $0) }, N, IC, OC,
                       accumulate: t == .o_proj || t == .down_proj)
        guard let lora = model.lora, let slot = lora.slots[l][t.index] else { return }
        LoRA.forward(out, acts.base + o.xa, inp, lora.weights.pointer(at: slot.a), lora.weights.pointer(at: slot.b),
                     N, IC, OC, lora.config.rank, scale: lora.config.scale)
    }

    /// Row `row`'s keys (values when `values`) of layer l: (context, KVH·HD).
    private func cached(_ values: Bool, _ l: Int, _ row: Int) -> UnsafeMutablePointer<Float> {
        let c = model.config
        return cache.base + (((values ? c.numLayers : 0) + l) * rows + row) * context * c.kvDim
    }

    /// Copies the pass's new keys and values to their rows' caches, after the tokens already there.
    private func store(layer l: Int, _ segments: [Segment]) {
        let kv = model.config.kvDim, a = acts.base
        var i = 0
        for s in segments {
            let at = lengths[s.row] * kv
            (cached(false, l, s.row) + at).update(from: a + o.k + i * kv, count: s.count * kv)
            (cached(true, l, s.row) + at).update(from: a + o.v + i * kv, count: s.count * kv)
            i += s.count
        }
    }

    /// Causal attention of each segment's queries over its row's cache (the new tokens included):
    /// for each (segment, head), scores (n, ctx) = q Kᵀ / √HD, masked so that token j sees
    /// positions up to its own, softmaxed, then out = P V. Heads share a key/value head in
    /// groups of NH / KVH.
    private func attend(layer l: Int, _ segments: [Segment]) {
        let c = model.config, HD = c.headDim, NH = c.numHeads, group = NH / c.numKVHeads
        let qd = c.qDim, kv = c.kvDim, a = acts.base
        var starts: [Int] = []  // first token of each segment in the pass
        starts.reserveCapacity(segments.count)
        var i = 0
        for s in segments { starts.append(i); i += s.count }
        let scale = 1 / Float(HD).squareRoot(), kernels = Vectors.kernels
        let scoresStride = chunk * context
        Parallel.forEachItem(segments.count * NH, workers: workers) { worker, item in
            let si = item / NH, head = item % NH, s = segments[si]
            let kvHead = head / group, n = s.count, before = lengths[s.row], ctx = before + n
            let scores = a + o.scores + worker * scoresStride
            let qh = a + o.q + starts[si] * qd + head * HD
            let keys = cached(false, l, s.row) + kvHead * HD, values = cached(true, l, s.row) + kvHead * HD
            // A one-token segment (decoding) takes matrix-vector products, which need no packing.
            if n == 1 {
                cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(ctx), Int32(HD), scale, keys, Int32(kv), qh, 1, 0, scores, 1)
            } else {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(ctx), Int32(HD), scale,
                            qh, Int32(qd), keys, Int32(kv), 0, scores, Int32(ctx))
            }
            for j in 0..<n {
                let row = scores + j * ctx, seen = before + j + 1
                let top = kernels.max(row, seen)
                let sum = kernels.expShifted(row, row, seen, shift: top)
                kernels.scale(row, row, 1 / sum, seen)
                if seen < ctx { (row + seen).update(repeating: 0, count: ctx - seen) }
            }
            let out = a + o.attn + starts[si] * qd + head * HD
            if n == 1 {
                cblas_sgemv(CblasRowMajor, CblasTrans, Int32(ctx), Int32(HD), 1, values, Int32(kv), scores, 1, 0, out, 1)
            } else {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(HD), Int32(ctx), 1,
                            scores, Int32(ctx), values, Int32(kv), 0, out, Int32(qd))
            }
        }
    }
}
