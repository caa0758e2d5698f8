import Foundation

/// The gated MLP activation h = silu(gate) · up, silu(g) = g·σ(g).
public enum SwiGLU {
    /// out (N·F) = silu(gate) · up, element-wise over `count` = N·F values.
    public static func forward(_ out: UnsafeMutablePointer<Float>, _ gate: UnsafePointer<Float>,
                               _ up: UnsafePointer<Float>, _ count: Int) {
        let vec = Vectors.kernels
        Parallel.forChunks(count, minPerThread: 65536) { r in vec.swiGLU(out, gate, up, r.lowerBound, r.upperBound) }
    }

    /// dgate = dout · up · σ(g)(1 + g(1-σ(g))); dup = dout · silu(g); and h = silu(g) · up, the
    /// forward's output rebuilt in the same pass (backward needs h only after dout is known, for
    /// down_proj's weight gradients, so the model does not store it or run `forward` again). All (N·F).
    /// The gradients are written, not added to: gate and up feed nothing but this activation.
    public static func backward(_ dgate: UnsafeMutablePointer<Float>, _ dup: UnsafeMutablePointer<Float>,
                                _ h: UnsafeMutablePointer<Float>,
                                _ dout: UnsafePointer<Float>, _ gate: UnsafePointer<Float>,
                                _ up: UnsafePointer<Float>, _ count: Int) {
        let vec = Vectors.kernels
        Parallel.forChunks(count, minPerThread: 65536) { r in
            vec.swiGLUBackward(dgate, dup, h, dout, gate, up, r.lowerBound, r.upperBound)
        }
    }
}
