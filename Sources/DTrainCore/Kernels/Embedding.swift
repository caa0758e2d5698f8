/// Token embedding lookup.
public enum Embedding {
    /// out (N, C) = wte[ids[n]] for each of the N tokens.
    public static func forward(_ out: UnsafeMutablePointer<Float>, _ ids: UnsafePointer<Int32>,
                               _ wte: UnsafePointer<Float>, _ N: Int, _ C: Int) {
        for n in 0..<N {
            (out + n * C).update(from: wte + Int(ids[n]) * C, count: C)
        }
    }

    /// dwte (V, C) += dout rows, scattered by token id.
    public static func backward(_ dwte: UnsafeMutablePointer<Float>, _ dout: UnsafePointer<Float>,
                                _ ids: UnsafePointer<Int32>, _ N: Int, _ C: Int) {
        for n in 0..<N {
            let dst = dwte + Int(ids[n]) * C, src = dout + n * C
            for c in 0..<C { dst[c] += src[c] }
        }
    }
}
