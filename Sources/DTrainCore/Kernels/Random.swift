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

    /// The 32-bit draw of lane `lane` (0..<16) of mask word `word` in a row keyed `key`:
    /// lowbias32 (a 32-bit mixer) of the key folded to 32 bits and the lane's Weyl step. Its low
    /// 16 bits are element 32·word + lane's draw, its high 16 bits element 32·word + 16 + lane's.
    /// Dropout draws hundreds of millions of these per step: 32-bit products fill twice the
    /// vector lanes of SplitMix64's 64-bit ones (which AVX2 lacks), and each serves two elements.
    @inline(__always) public static func dropoutWordDraw(_ key: UInt64, word: Int, lane: Int) -> UInt32 {
        var x = UInt32(truncatingIfNeeded: key ^ (key >> 32)) ^ (UInt32(truncatingIfNeeded: 16 * word + lane) &* 0x9E37_79B9)
        x = (x ^ (x >> 16)) &* 0x7FEB_352D
        x = (x ^ (x >> 15)) &* 0x846C_A68B
        return x ^ (x >> 16)
    }

    /// Dropout's 16-bit draw for element `index` of a row keyed `key` (see `dropoutWordDraw`).
    @inline(__always) public static func dropoutDraw(_ key: UInt64, _ index: Int) -> UInt32 {
        let j = index & 31, d = dropoutWordDraw(key, word: index >> 5, lane: j & 15)
        return j < 16 ? d & 0xFFFF : d >> 16
    }

    /// Uniform in [0, 1) with 24 random bits.
    @inline(__always) public static func uniform(_ key: UInt64, _ index: Int) -> Float {
        Float(mix(key ^ UInt64(truncatingIfNeeded: index) &* 0xD1B5_4A32_D192_ED03) >> 40) * (1.0 / 16_777_216.0)
    }
}

/// Inverted dropout whose mask is drawn from counter keys, kept as bits for backward.
///
/// Element (n, c) of an (N, C) input is kept when dropoutDraw(key ^ rowKeys[n], c) ≥ ⌈p·2¹⁶⌉. Row
/// keys come from the token's example and position (`TokenBatch.tokenKeys`), so a token gets the
/// same mask however examples are packed, batched or spread over ranks. Forward draws the mask
/// once into (N, ⌈C/32⌉) words, bit c % 32 of word c / 32 set where kept; backward and any
/// re-application read the bits, a 32nd of the input's size, instead of hashing again.
public enum Dropout {
    /// The threshold below which a 16-bit draw drops: ⌈p·2¹⁶⌉, so that an element is dropped
    /// with probability p to within 2⁻¹⁶.
    static func threshold(_ p: Float) -> UInt32 { min(65536, UInt32((p * 65536).rounded(.up))) }

    /// Mask words per row of C elements.
    public static func wordsPerRow(_ C: Int) -> Int { (C + 31) / 32 }

    /// bits (N, ⌈C/32⌉) = the mask, and out (N, C) = inp · keep / (1 - p); rowKeys (N). Rows are
    /// split across the threads; each element's draw is the same whoever computes it.
    public static func forward(_ out: UnsafeMutablePointer<Float>, _ bits: UnsafeMutablePointer<UInt32>,
                               _ inp: UnsafePointer<Float>, _ rowKeys: UnsafePointer<UInt64>, _ N: Int, _ C: Int,
                               p: Float, key: UInt64) {
        let s = 1 / (1 - p), t = threshold(p), W = wordsPerRow(C), vec = Vectors.kernels
        Parallel.forChunks(N, minPerThread: max(1, 16384 / max(C, 1))) { rows in
            for n in rows {
                vec.dropoutMaskRow(bits + n * W, C, key: key ^ rowKeys[n], threshold: t)
                vec.dropoutRow(out + n * C, inp + n * C, C, bits: bits + n * W, scale: s)
            }
        }
    }

    /// out (N, C) = inp · keep / (1 - p) with the mask forward drew.
    public static func reapply(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, _ bits: UnsafePointer<UInt32>,
                               _ N: Int, _ C: Int, p: Float) {
        let s = 1 / (1 - p), W = wordsPerRow(C), vec = Vectors.kernels
        Parallel.forChunks(N, minPerThread: max(1, 16384 / max(C, 1))) { rows in
            for n in rows { vec.dropoutRow(out + n * C, inp + n * C, C, bits: bits + n * W, scale: s) }
        }
    }

    /// dinp (N, C) += dout masked and scaled exactly as forward did.
    public static func backward(_ dinp: UnsafeMutablePointer<Float>, _ dout: UnsafePointer<Float>, _ bits: UnsafePointer<UInt32>,
                                _ N: Int, _ C: Int, p: Float) {
        let s = 1 / (1 - p), W = wordsPerRow(C), vec = Vectors.kernels
        Parallel.forChunks(N, minPerThread: max(1, 16384 / max(C, 1))) { rows in
            for n in rows { vec.dropoutGradientRow(dinp + n * C, dout + n * C, C, bits: bits + n * W, scale: s) }
        }
    }
}
