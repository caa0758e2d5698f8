import Foundation

/// AdamW hyper-parameters (PyTorch's defaults).
public struct AdamWHyper: Sendable, Equatable, Codable {
    public var beta1: Float = 0.9
    public var beta2: Float = 0.999
    public var eps: Float = 1e-8
    public var weightDecay: Float = 0.01
    public init(beta1: Float = 0.9, beta2: Float = 0.999, eps: Float = 1e-8, weightDecay: Float = 0.01) {
        self.beta1 = beta1; self.beta2 = beta2; self.eps = eps; self.weightDecay = weightDecay
    }
}

/// AdamW with decoupled weight decay and bias correction, over one flat parameter range.
public enum AdamW {
    /// One update of `count` parameters at step `t` (1-based): params, m, v updated in place
    /// from grads. Matches torch.optim.AdamW: p ← p(1 - lr·wd); m, v moving averages;
    /// p ← p - lr/(1-β1ᵗ) · m / (√v/√(1-β2ᵗ) + eps). Gradients are multiplied by `gradScale`
    /// first (global-norm clipping).
    public static func step(_ params: UnsafeMutablePointer<Float>, _ m: UnsafeMutablePointer<Float>,
                            _ v: UnsafeMutablePointer<Float>, _ grads: UnsafePointer<Float>,
                            _ count: Int, lr: Float, hyper: AdamWHyper, t: Int, gradScale: Float = 1) {
        let b1 = hyper.beta1, b2 = hyper.beta2, eps = hyper.eps
        let bc1 = 1 - Float(pow(Double(b1), Double(t)))
        let bc2Sqrt = Float((1 - pow(Double(b2), Double(t))).squareRoot())
        let stepSize = lr / bc1
        let decay = 1 - lr * hyper.weightDecay
        // Eight lanes at a time with explicit vectors: on SmolLM2's 134.5M parameters the scalar
        // loop took 0.20-0.27 s per step, this one 0.11 s (28 bytes of memory traffic per
        // parameter, about 34 GB/s). The lanes do the scalar arithmetic in the same order.
        let vb1 = SIMD8<Float>(repeating: b1), vb2 = SIMD8<Float>(repeating: b2)
        let va1 = SIMD8<Float>(repeating: 1 - b1), va2 = SIMD8<Float>(repeating: 1 - b2)
        let vScale = SIMD8<Float>(repeating: gradScale), vDecay = SIMD8<Float>(repeating: decay)
        let vStep = SIMD8<Float>(repeating: stepSize), vBc2 = SIMD8<Float>(repeating: bc2Sqrt)
        let vEps = SIMD8<Float>(repeating: eps)
        // The threads split whole vectors; the count % 8 elements left over run on the caller below.
        Parallel.forChunks(count / 8, minPerThread: 1 << 13) { r in
            for j in r {
                let i = j * 8
                let g = FastMath.load(grads, i) * vScale
                let mi = vb1 * FastMath.load(m, i) + va1 * g
                let vi = vb2 * FastMath.load(v, i) + va2 * g * g
                FastMath.store(mi, m, i)
                FastMath.store(vi, v, i)
                let p = FastMath.load(params, i) * vDecay - vStep * mi / (vi.squareRoot() / vBc2 + vEps)
                FastMath.store(p, params, i)
            }
        }
        for i in (count / 8 * 8)..<count {
            let g = grads[i] * gradScale
            let mi = b1 * m[i] + (1 - b1) * g
            let vi = b2 * v[i] + (1 - b2) * g * g
            m[i] = mi
            v[i] = vi
            params[i] = params[i] * decay - stepSize * mi / (vi.squareRoot() / bc2Sqrt + eps)
        }
    }
}
