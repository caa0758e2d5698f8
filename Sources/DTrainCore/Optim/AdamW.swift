import Foundation

/// AdamW hyper-parameters (PyTorch's defaults).
public struct AdamWHyper: Sendable, Equatable, Codable {
    public var beta1: Float
    public var beta2: Float
    public var eps: Float
    public var weightDecay: Float
    /// No defaults here: the run config's `optim:` section holds them.
    public init(beta1: Float, beta2: Float, eps: Float, weightDecay: Float) {
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
        // Whole vectors at a time (`Vectors`): a scalar loop leaves this memory-bound update
        // far from the memory's speed. The lanes do the scalar arithmetic in the same order, so
        // the result does not depend on the vector width.
        let vec = Vectors.kernels, lanes = vec.lanes
        // The threads split whole vectors; the count % lanes elements left over run on the caller below.
        Parallel.forChunks(count / lanes, minPerThread: 65536 / lanes) { r in
            vec.adamW(params, m, v, grads, r.lowerBound * lanes, r.upperBound * lanes, beta1: b1, beta2: b2,
                      gradScale: gradScale, decay: decay, stepSize: stepSize, bc2Sqrt: bc2Sqrt, eps: eps)
        }
        for i in (count / lanes * lanes)..<count {
            let g = grads[i] * gradScale
            let mi = b1 * m[i] + (1 - b1) * g
            let vi = b2 * v[i] + (1 - b2) * g * g
            m[i] = mi
            v[i] = vi
            params[i] = params[i] * decay - stepSize * mi / (vi.squareRoot() / bc2Sqrt + eps)
        }
    }
}
