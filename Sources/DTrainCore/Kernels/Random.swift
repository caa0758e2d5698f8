/// Counter-based random numbers: every draw is a pure function of (key, index), so a value can be
/// regenerated in backward, on any rank, after any resume, without carrying generator state.
public enum CounterRandom {
    /// Mixes a 64-bit value (SplitMix64's finaliser).
    @inline(__always) public static func mix(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A key for one stream, derived from several identifiers (seed, step, layer, ...).
    public static func key(_ parts: UInt64...) -> UInt64 {
        var h: UInt64 = 0x6A09_E667_F3BC_C908
        for p in parts { h = mix(h ^ mix(p)) }
        return h
    }

    /// Dropout's draw for element `index` of a row keyed `key`: 24 random bits, from a 32-bit
    /// mixer (lowbias32) of the key folded to 32 bits and the index's Weyl step. Dropout draws
    /// hundreds of millions of these per step, and 32-bit products fill twice the vector lanes
    /// of SplitMix64's 64-bit ones (which AVX2 lacks altogether).
    @inline(__always) public static func dropoutBits(_ key: UInt64, _ index: Int) -> UInt32 {
        var x = UInt32(truncatingIfNeeded: key ^ (key >> 32)) ^ (UInt32(truncatingIfNeeded: index) &* 0x9E37_79B9)
        x = (x ^ (x >> 16)) &* 0x7FEB_352D
        x = (x ^ (x >> 15)) &* 0x846C_A68B
        return (x ^ (x >> 16)) >> 8
    }

    /// Uniform in [0, 1) with 24 random bits.
    @inline(__always) public static func uniform(_ key: UInt64, _ index: Int) -> Float {
        Float(mix(key ^ UInt64(truncatingIfNeeded: index) &* 0xD1B5_4A32_D192_ED03) >> 40) * (1.0 / 16_777_216.0)
    }
}

/// Inverted dropout whose mask is regenerated from counter keys instead of being stored.
///
/// Element (n, c) of an (N, C) input is kept when dropoutBits(key ^ rowKeys[n], c) ≥ ⌈p·2²⁴⌉. Row keys
/// come from the token's example and position (`TokenBatch.tokenKeys`), so a token gets the same
/// mask however examples are packed, batched or spread over ranks.
public enum Dropout {
    /// The threshold below which a draw of `CounterRandom.dropoutBits` drops: ⌈p·2²⁴⌉, so that an
    /// element is dropped with probability p to within 2⁻²⁴.
    static func threshold(_ p: Float) -> UInt32 { UInt32((p * 16_777_216).rounded(.up)) }

    /// out (N, C) = inp · keep / (1 - p); rowKeys (N). Rows are split across the threads; each
    /// element's draw is the same whoever computes it.
    public static func forward(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>,
                               _ rowKeys: UnsafePointer<UInt64>, _ N: Int, _ C: Int, p: Float, key: UInt64) {
        let s = 1 / (1 - p), t = threshold(p), vec = Vectors.kernels
        Parallel.forChunks(N, minPerThread: max(1, 16384 / max(C, 1))) { rows in
            for n in rows { vec.dropoutRow(out + n * C, inp + n * C, C, key: key ^ rowKeys[n], threshold: t, scale: s) }
        }
    }

    /// dinp (N, C) += dout masked and scaled exactly as forward did.
    public static func backward(_ dinp: UnsafeMutablePointer<Float>, _ dout: UnsafePointer<Float>,
                                _ rowKeys: UnsafePointer<UInt64>, _ N: Int, _ C: Int, p: Float, key: UInt64) {
        let s = 1 / (1 - p), t = threshold(p), vec = Vectors.kernels
        Parallel.forChunks(N, minPerThread: max(1, 16384 / max(C, 1))) { rows in
            for n in rows { vec.dropoutGradientRow(dinp + n * C, dout + n * C, C, key: key ^ rowKeys[n], threshold: t, scale: s) }
        }
    }
}
