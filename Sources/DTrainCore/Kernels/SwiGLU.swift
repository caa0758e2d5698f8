import Foundation

/// The gated MLP activation h = silu(gate) · up, silu(g) = g·σ(g).
public enum SwiGLU {
    /// out (N·F) = silu(gate) · up, element-wise over `count` = N·F values.
    public static func forward(_ out: UnsafeMutablePointer<Float>, _ gate: UnsafePointer<Float>,
                               _ up: UnsafePointer<Float>, _ count: Int) {
        Parallel.forChunks(count, minPerThread: 65536) { r in
            var i = r.lowerBound
            while i + 8 <= r.upperBound {
                let g = FastMath.load(gate, i)
                FastMath.store(g * FastMath.sigmoid(g) * FastMath.load(up, i), out, i)
                i += 8
            }
            while i < r.upperBound {
                let g = gate[i]
                out[i] = g / (1 + expf(-g)) * up[i]
                i += 1
            }
        }
    }

    /// dgate = dout · up · σ(g)(1 + g(1-σ(g))); dup = dout · silu(g); and h = silu(g) · up, the
    /// forward's output rebuilt in the same pass (backward needs h only after dout is known, for
    /// down_proj's weight gradients, so the model does not store it or run `forward` again). All (N·F).
    /// The gradients are written, not added to: gate and up feed nothing but this activation.
    public static func backward(_ dgate: UnsafeMutablePointer<Float>, _ dup: UnsafeMutablePointer<Float>,
                                _ h: UnsafeMutablePointer<Float>,
                                _ dout: UnsafePointer<Float>, _ gate: UnsafePointer<Float>,
                                _ up: UnsafePointer<Float>, _ count: Int) {
        Parallel.forChunks(count, minPerThread: 65536) { r in
            var i = r.lowerBound
            while i + 8 <= r.upperBound {
                let g = FastMath.load(gate, i), u = FastMath.load(up, i), d = FastMath.load(dout, i), s = FastMath.sigmoid(g)
                let silu = g * s
                FastMath.store(d * u * s * (1 + g * (1 - s)), dgate, i)
                FastMath.store(d * silu, dup, i)
                FastMath.store(silu * u, h, i)
                i += 8
            }
            while i < r.upperBound {
                let g = gate[i], s = 1 / (1 + expf(-g))
                dgate[i] = dout[i] * up[i] * s * (1 + g * (1 - s))
                dup[i] = dout[i] * g * s
                h[i] = g / (1 + expf(-g)) * up[i]  // as forward computes it, to the bit
                i += 1
            }
        }
    }
}
