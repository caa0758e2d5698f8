import Foundation

/// The gated MLP activation h = silu(gate) · up.
public enum SwiGLU {
    /// out (N·F) = silu(gate) · up, element-wise over `count` = N·F values.
    public static func forward(_ out: UnsafeMutablePointer<Float>, _ gate: UnsafePointer<Float>,
                               _ up: UnsafePointer<Float>, _ count: Int) {
        Parallel.forChunks(count, minPerThread: 65536) { r in
            for i in r {
                let g = gate[i]
                out[i] = g / (1 + expf(-g)) * up[i]
            }
        }
    }

    /// dgate += dout · up · σ(g)(1 + g(1-σ(g))); dup += dout · silu(g). All (N·F).
    public static func backward(_ dgate: UnsafeMutablePointer<Float>, _ dup: UnsafeMutablePointer<Float>,
                                _ dout: UnsafePointer<Float>, _ gate: UnsafePointer<Float>,
                                _ up: UnsafePointer<Float>, _ count: Int) {
        Parallel.forChunks(count, minPerThread: 65536) { r in
            for i in r {
                let g = gate[i], s = 1 / (1 + expf(-g))
                dgate[i] += dout[i] * up[i] * s * (1 + g * (1 - s))
                dup[i] += dout[i] * g * s
            }
        }
    }
}
