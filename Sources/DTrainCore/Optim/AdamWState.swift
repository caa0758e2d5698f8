/// AdamW's moments for one flat trainable range, and the number of steps taken.
public final class AdamWState {
    /// First moment, same layout as the trainable parameters.
    public let m: FloatBuffer
    /// Second moment.
    public let v: FloatBuffer
    /// Steps taken so far (the next step is `step + 1`).
    public var step = 0

    public init(count: Int) {
        m = FloatBuffer(count: count)
        v = FloatBuffer(count: count)
    }

    /// Applies one update to `params` from `grads` with learning rate `lr`.
    public func update(params: FloatBuffer, grads: FloatBuffer, lr: Float, hyper: AdamWHyper, gradScale: Float = 1) {
        precondition(params.count == m.count && grads.count == m.count, "AdamWState: buffer sizes differ")
        step += 1
        AdamW.step(params.base, m.base, v.base, grads.base, m.count, lr: lr, hyper: hyper, t: step, gradScale: gradScale)
    }

    /// √(Σ g²) over a gradient buffer, accumulated in float64.
    public static func norm(_ grads: FloatBuffer) -> Double {
        let chunks = max(1, Parallel.threads)
        var partial = [Double](repeating: 0, count: chunks)
        let per = (grads.count + chunks - 1) / chunks
        partial.withUnsafeMutableBufferPointer { out in
            let outBase = out.baseAddress!
            Parallel.forChunks(chunks, minPerThread: 1) { r in
                for c in r {
                    let lo = c * per, hi = min(grads.count, lo + per)
                    // Blocks of 256 summed in float32 lanes, the blocks summed in double.
                    let blocks = (hi - lo) / 256 * 256
                    var s = Vectors.kernels.sumOfSquares(grads.base + lo, blocks)
                    var i = lo + blocks
                    var tail: Float = 0
                    while i < hi { tail += grads.base[i] * grads.base[i]; i += 1 }
                    s += Double(tail)
                    outBase[c] = s
                }
            }
        }
        return partial.reduce(0, +).squareRoot()
    }
}
