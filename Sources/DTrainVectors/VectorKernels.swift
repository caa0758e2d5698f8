// The element-wise kernels' vector code, compiled twice: as `DTrainVectors` for AVX2/FMA
// (8 float32 lanes, -target-cpu haswell) and as `DTrainVectors512` for AVX-512 (16 lanes,
// -target-cpu skylake-avx512, DTRAIN_LANES16), from this one file (DTrainVectors512's copy is a
// symbolic link). DTrainCore picks one at run time from the CPU's features (`Vectors`), so one
// binary runs the widest vectors the CPU has. Swift has no per-function target attribute, so a
// whole module per vector width is how its code gets both.
//
// Every function here is a plain loop over raw pointers; the threads' split, the shapes and
// the scratch live in DTrainCore's kernels, which call these per row or per chunk. Results are
// the same bits on every run on the same CPU; the two widths differ only in the order of the
// lanes' sums (reductions), never in per-element arithmetic.

import CCPU
import Glibc

#if DTRAIN_LANES16
/// One vector register of float32.
public typealias FloatLanes = SIMD16<Float>
typealias BitLanes = SIMD16<UInt32>
#else
/// One vector register of float32.
public typealias FloatLanes = SIMD8<Float>
typealias BitLanes = SIMD8<UInt32>
#endif

/// The vector kernels at this module's width.
public enum VectorKernels {
    /// Float32 lanes per vector: 8 (AVX2) or 16 (AVX-512).
    public static var lanes: Int { FloatLanes.scalarCount }

    static let L = FloatLanes.scalarCount

    @inline(__always) static func load(_ p: UnsafePointer<Float>, _ i: Int) -> FloatLanes {
        UnsafeRawPointer(p + i).loadUnaligned(as: FloatLanes.self)
    }

    @inline(__always) static func store(_ v: FloatLanes, _ p: UnsafeMutablePointer<Float>, _ i: Int) {
        UnsafeMutableRawPointer(p + i).storeBytes(of: v, as: FloatLanes.self)
    }

    @inline(__always) static func splat(_ x: Float) -> FloatLanes { FloatLanes(repeating: x) }

    /// e^x per lane, within 2 ulp of expf over [-87, 88] (Cephes' range reduction and
    /// polynomial); inputs below -87.3 give 0 (masked scores pass -inf), above 88.7 large values.
    @inline(__always)
    static func exp(_ x: FloatLanes) -> FloatLanes {
        // Clamp, then split x = n·ln2 + r with n rounded to nearest by the 1.5·2²³ trick: adding
        // it leaves n in the low mantissa bits, so no float-to-int conversion is needed.
        var xc = x
        xc.replace(with: -87.33654, where: x .< -87.33654)
        xc.replace(with: 88.72283, where: x .> 88.72283)
        let magic = splat(12_582_912)
        let t = xc * 1.442695040888963 + magic
        let n = t - magic
        var r = xc - n * 0.693359375
        r = r + n * 2.12194440e-4
        var p = splat(1.9875691500e-4)
        p = p * r + 1.3981999507e-3
        p = p * r + 8.3334519073e-3
        p = p * r + 4.1665795894e-2
        p = p * r + 1.6666665459e-1
        p = p * r + 5.0000001201e-1
        p = p * (r * r) + r + 1
        // 2^n: the integer n sits in t's low bits; move it into the exponent field.
        let tBits = unsafeBitCast(t, to: BitLanes.self)
        let pow2Bits = (tBits &- 0x4B40_0000 &+ 127) &<< 23
        let result = p * unsafeBitCast(pow2Bits, to: FloatLanes.self)
        let under = x .< splat(-87.33654)
        return unsafeBitCast(unsafeBitCast(result, to: BitLanes.self) & ~unsafeBitCast(under, to: BitLanes.self),
                             to: FloatLanes.self)
    }

    /// e^x of one float, by the same polynomial as the lanes (so a row's tail matches its body).
    @inline(__always)
    static func exp1(_ x: Float) -> Float {
        var lane = splat(-.infinity)
        lane[0] = x
        return exp(lane)[0]
    }

    /// 1 / (1 + e^-x) per lane.
    @inline(__always)
    static func sigmoid(_ x: FloatLanes) -> FloatLanes { 1 / (1 + exp(-x)) }

    // MARK: Reductions

    /// The largest of src[0..<count].
    public static func max(_ src: UnsafePointer<Float>, _ count: Int) -> Float {
        var m = splat(-.infinity)
        var i = 0
        while i + L <= count {
            let v = load(src, i)
            m.replace(with: v, where: v .> m)
            i += L
        }
        var r = m.max()
        while i < count { r = Swift.max(r, src[i]); i += 1 }
        return r
    }

    /// Σ a[i]·b[i] for i < count (float32 lanes, summed at the end).
    public static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ count: Int) -> Float {
        var acc = splat(0)
        var i = 0
        while i + L <= count {
            acc += load(a, i) * load(b, i)
            i += L
        }
        var sum = acc.sum()
        while i < count { sum += a[i] * b[i]; i += 1 }
        return sum
    }

    /// c[m·ldc + n] = alpha · Σ_k a[m·lda + k]·b[n·ldb + k] (+ c[m·ldc + n] when `accumulate`),
    /// for m < M and n in n0..<n1: a few rows (decoding's tokens) times a matrix's rows, the
    /// matrix streamed once. One row of a takes the matrix row after row; more take blocks of
    /// four matrix rows, two rows of a at a time (eight independent sums). Every (m, n) is one
    /// running vector sum over k, then its lanes, then the tail, whatever block it falls in, so
    /// a row's result does not depend on the other rows of its product (an answer on its batch).
    public static func rowsTimesRows(_ c: UnsafeMutablePointer<Float>, _ ldc: Int, _ a: UnsafePointer<Float>, _ lda: Int,
                                     _ b: UnsafePointer<Float>, _ ldb: Int, _ M: Int, _ n0: Int, _ n1: Int, _ K: Int,
                                     alpha: Float, accumulate: Bool) {
        let body = K / L * L
        @inline(__always) func finish(_ m: Int, _ n: Int, _ acc: FloatLanes) {
            var sum = acc.sum()
            let aRow = a + m * lda, bRow = b + n * ldb
            var k = body
            while k < K { sum += aRow[k] * bRow[k]; k += 1 }
            let out = c + m * ldc + n
            out.pointee = accumulate ? out.pointee + alpha * sum : alpha * sum
        }
        // One row of a (batch-1 decoding, bound by reading the matrix): the matrix row after row,
        // one stream the hardware prefetcher follows. Side by side, four rows were four short
        // streams it fetched late, and one row of a has no reuse to gain.
        var n = n0
        if M == 1 {
            while n < n1 {
                let b0 = b + n * ldb
                var s0 = splat(0)
                var k = 0
                while k < body {
                    #if !DTRAIN_LANES16
                    // At 8 lanes (AVX2 CPUs such as Zen 3) the prefetcher alone ran the stream
                    // behind the loads; asking for the line 256 bytes ahead keeps it in front.
                    dtrain_prefetch(b0 + k + 64)
                    #endif
                    s0 += load(a, k) * load(b0, k)
                    k += L
                }
                finish(0, n, s0)
                n += 1
            }
            return
        }
        // Several rows of a: blocks of four matrix rows, each loaded once for all of them; each
        // pass over a block asks for the next block's same lines, which the prefetcher would
        // fetch late (a prefetch past the matrix's end does not fault).
        let ahead = 4 * ldb
        while n + 4 <= n1 {
            let b0 = b + n * ldb, b1 = b0 + ldb, b2 = b1 + ldb, b3 = b2 + ldb
            var m = 0
            while m + 2 <= M {
                let x0 = a + m * lda, x1 = x0 + lda
                var s00 = splat(0), s01 = splat(0), s02 = splat(0), s03 = splat(0)
                var s10 = splat(0), s11 = splat(0), s12 = splat(0), s13 = splat(0)
                var k = 0
                while k < body {
                    dtrain_prefetch(b0 + ahead + k); dtrain_prefetch(b1 + ahead + k)
                    dtrain_prefetch(b2 + ahead + k); dtrain_prefetch(b3 + ahead + k)
                    let w0 = load(b0, k), w1 = load(b1, k), w2 = load(b2, k), w3 = load(b3, k)
                    let u = load(x0, k), v = load(x1, k)
                    s00 += u * w0; s01 += u * w1; s02 += u * w2; s03 += u * w3
                    s10 += v * w0; s11 += v * w1; s12 += v * w2; s13 += v * w3
                    k += L
                }
                finish(m, n, s00); finish(m, n + 1, s01); finish(m, n + 2, s02); finish(m, n + 3, s03)
                finish(m + 1, n, s10); finish(m + 1, n + 1, s11); finish(m + 1, n + 2, s12); finish(m + 1, n + 3, s13)
                m += 2
            }
            if m < M {
                let x0 = a + m * lda
                var s0 = splat(0), s1 = splat(0), s2 = splat(0), s3 = splat(0)
                var k = 0
                while k < body {
                    dtrain_prefetch(b0 + ahead + k); dtrain_prefetch(b1 + ahead + k)
                    dtrain_prefetch(b2 + ahead + k); dtrain_prefetch(b3 + ahead + k)
                    let u = load(x0, k)
                    s0 += u * load(b0, k); s1 += u * load(b1, k); s2 += u * load(b2, k); s3 += u * load(b3, k)
                    k += L
                }
                finish(m, n, s0); finish(m, n + 1, s1); finish(m, n + 2, s2); finish(m, n + 3, s3)
            }
            n += 4
        }
        while n < n1 {
            let b0 = b + n * ldb
            for m in 0..<M {
                let x0 = a + m * lda
                var s0 = splat(0)
                var k = 0
                while k < body { s0 += load(x0, k) * load(b0, k); k += L }
                finish(m, n, s0)
            }
            n += 1
        }
    }

    /// Σ a[i]·b[i]·c[i] for i < count (float32 lanes, summed at the end).
    public static func dot3(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ c: UnsafePointer<Float>,
                            _ count: Int) -> Float {
        var acc = splat(0)
        var i = 0
        while i + L <= count {
            acc += load(a, i) * load(b, i) * load(c, i)
            i += L
        }
        var sum = acc.sum()
        while i < count { sum += a[i] * b[i] * c[i]; i += 1 }
        return sum
    }

    /// Σ src[i]² over src[0..<count], count a multiple of 256: blocks of 256 summed in float32
    /// lanes, the blocks summed in double.
    public static func sumOfSquares(_ src: UnsafePointer<Float>, _ count: Int) -> Double {
        var s = 0.0
        var i = 0
        while i + 256 <= count {
            var acc = splat(0)
            for j in stride(from: i, to: i + 256, by: L) {
                let g = load(src, j)
                acc += g * g
            }
            s += Double(acc.sum())
            i += 256
        }
        return s
    }

    /// dst[i] = e^(src[i] - shift) for i < count (dst may be src); returns Σ dst.
    public static func expShifted(_ dst: UnsafeMutablePointer<Float>, _ src: UnsafePointer<Float>, _ count: Int,
                                  shift: Float) -> Float {
        var acc = splat(0)
        var i = 0
        let s = splat(shift)
        while i + L <= count {
            let v = exp(load(src, i) - s)
            store(v, dst, i)
            acc += v
            i += L
        }
        var sum = acc.sum()
        while i < count {
            let e = exp1(src[i] - shift)
            dst[i] = e
            sum += e
            i += 1
        }
        return sum
    }

    // MARK: Rows

    /// y[c] = x[c]·r·w[c] for c < count (RMSNorm's output row).
    public static func scaleRow(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ r: Float,
                                _ w: UnsafePointer<Float>, _ count: Int) {
        let vr = splat(r)
        var c = 0
        while c + L <= count {
            store(load(x, c) * vr * load(w, c), y, c)
            c += L
        }
        while c < count { y[c] = x[c] * r * w[c]; c += 1 }
    }

    /// dx[c] += r·dy[c]·w[c] - k·x[c] for c < count (RMSNorm's input gradient row).
    public static func normGradientRow(_ dx: UnsafeMutablePointer<Float>, _ dy: UnsafePointer<Float>,
                                       _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
                                       r: Float, k: Float, _ count: Int) {
        let vr = splat(r), vk = splat(k)
        var c = 0
        while c + L <= count {
            store(load(dx, c) + (vr * load(dy, c) * load(w, c) - vk * load(x, c)), dx, c)
            c += L
        }
        while c < count { dx[c] += r * dy[c] * w[c] - k * x[c]; c += 1 }
    }

    /// acc[c] += a[c]·b[c]·s for c < count.
    public static func addScaledProduct(_ acc: UnsafeMutablePointer<Float>, _ a: UnsafePointer<Float>,
                                        _ b: UnsafePointer<Float>, _ s: Float, _ count: Int) {
        let vs = splat(s)
        var c = 0
        while c + L <= count {
            store(load(acc, c) + load(a, c) * load(b, c) * vs, acc, c)
            c += L
        }
        while c < count { acc[c] += a[c] * b[c] * s; c += 1 }
    }

    /// dst[c] = src[c]·f for c < count.
    public static func scale(_ dst: UnsafeMutablePointer<Float>, _ src: UnsafePointer<Float>, _ f: Float, _ count: Int) {
        let vf = splat(f)
        var c = 0
        while c + L <= count {
            store(load(src, c) * vf, dst, c)
            c += L
        }
        while c < count { dst[c] = src[c] * f; c += 1 }
    }

    /// dst[c] += src[c] for c < count.
    public static func add(_ dst: UnsafeMutablePointer<Float>, _ src: UnsafePointer<Float>, _ count: Int) {
        var c = 0
        while c + L <= count {
            store(load(dst, c) + load(src, c), dst, c)
            c += L
        }
        while c < count { dst[c] += src[c]; c += 1 }
    }

    /// dst[c] += a·x[c] - b·y[c] for c < count.
    public static func addDifference(_ dst: UnsafeMutablePointer<Float>, _ a: Float, _ x: UnsafePointer<Float>,
                                     _ b: Float, _ y: UnsafePointer<Float>, _ count: Int) {
        let va = splat(a), vb = splat(b)
        var c = 0
        while c + L <= count {
            store(load(dst, c) + (va * load(x, c) - vb * load(y, c)), dst, c)
            c += L
        }
        while c < count { dst[c] += a * x[c] - b * y[c]; c += 1 }
    }

    /// p[j] = e[j]·rowScale and dp[j] = p[j]·(dp[j] - rowDot), for j < count (attention's
    /// backward from kept exponentials).
    public static func scaledGradientRow(_ p: UnsafeMutablePointer<Float>, _ dp: UnsafeMutablePointer<Float>,
                                         _ e: UnsafePointer<Float>, _ count: Int, rowScale: Float, rowDot: Float) {
        let s = splat(rowScale), d = splat(rowDot)
        var j = 0
        while j + L <= count {
            let pj = load(e, j) * s
            store(pj, p, j)
            store(pj * (load(dp, j) - d), dp, j)
            j += L
        }
        while j < count {
            let pj = e[j] * rowScale
            p[j] = pj
            dp[j] = pj * (dp[j] - rowDot)
            j += 1
        }
    }

    /// p[j] = e^(p[j] - lse) over the scores in p, and dp[j] = p[j]·(dp[j] - rowDot), for
    /// j < count (attention's backward, recomputing the probabilities).
    public static func softmaxGradientRow(_ p: UnsafeMutablePointer<Float>, _ dp: UnsafeMutablePointer<Float>,
                                          _ count: Int, lse: Float, rowDot: Float) {
        let l = splat(lse), d = splat(rowDot)
        var j = 0
        while j + L <= count {
            let e = exp(load(p, j) - l)
            store(e, p, j)
            store(e * (load(dp, j) - d), dp, j)
            j += L
        }
        while j < count {
            let e = exp1(p[j] - lse)
            p[j] = e
            dp[j] = e * (dp[j] - rowDot)
            j += 1
        }
    }

    // MARK: Element-wise over ranges

    /// out[i] = silu(gate[i])·up[i] for i in lo..<hi.
    public static func swiGLU(_ out: UnsafeMutablePointer<Float>, _ gate: UnsafePointer<Float>,
                              _ up: UnsafePointer<Float>, _ lo: Int, _ hi: Int) {
        var i = lo
        while i + L <= hi {
            let g = load(gate, i)
            store(g * sigmoid(g) * load(up, i), out, i)
            i += L
        }
        while i < hi {
            let g = gate[i]
            out[i] = g / (1 + expf(-g)) * up[i]
            i += 1
        }
    }

    /// For i in lo..<hi: dgate = dout·up·σ(g)(1 + g(1-σ(g))), dup = dout·silu(g), and
    /// h = silu(g)·up as `swiGLU` computes it, to the bit.
    public static func swiGLUBackward(_ dgate: UnsafeMutablePointer<Float>, _ dup: UnsafeMutablePointer<Float>,
                                      _ h: UnsafeMutablePointer<Float>, _ dout: UnsafePointer<Float>,
                                      _ gate: UnsafePointer<Float>, _ up: UnsafePointer<Float>, _ lo: Int, _ hi: Int) {
        var i = lo
        while i + L <= hi {
            let g = load(gate, i), u = load(up, i), d = load(dout, i), s = sigmoid(g)
            let silu = g * s
            store(d * u * s * (1 + g * (1 - s)), dgate, i)
            store(d * silu, dup, i)
            store(silu * u, h, i)
            i += L
        }
        while i < hi {
            let g = gate[i], s = 1 / (1 + expf(-g))
            dgate[i] = dout[i] * up[i] * s * (1 + g * (1 - s))
            dup[i] = dout[i] * g * s
            h[i] = g / (1 + expf(-g)) * up[i]
            i += 1
        }
    }

    /// AdamW over elements lo..<hi, whole vectors only (hi - lo a multiple of `lanes`): g =
    /// grads·gradScale; m = β1·m + (1-β1)·g; v = β2·v + (1-β2)·g²; p = p·decay - step·m/(√v/bc2 + eps).
    /// Each lane does the scalar formula's arithmetic in the same order.
    public static func adamW(_ params: UnsafeMutablePointer<Float>, _ m: UnsafeMutablePointer<Float>,
                             _ v: UnsafeMutablePointer<Float>, _ grads: UnsafePointer<Float>, _ lo: Int, _ hi: Int,
                             beta1: Float, beta2: Float, gradScale: Float, decay: Float, stepSize: Float,
                             bc2Sqrt: Float, eps: Float) {
        let vb1 = splat(beta1), vb2 = splat(beta2), va1 = splat(1 - beta1), va2 = splat(1 - beta2)
        let vScale = splat(gradScale), vDecay = splat(decay), vStep = splat(stepSize)
        let vBc2 = splat(bc2Sqrt), vEps = splat(eps)
        var i = lo
        while i + L <= hi {
            let g = load(grads, i) * vScale
            let mi = vb1 * load(m, i) + va1 * g
            let vi = vb2 * load(v, i) + va2 * g * g
            store(mi, m, i)
            store(vi, v, i)
            store(load(params, i) * vDecay - vStep * mi / (vi.squareRoot() / vBc2 + vEps), params, i)
            i += L
        }
    }

    /// The dropout mask of one row of `count` elements with key k: ⌈count/32⌉ words, bit j of
    /// word w set when element 32·w + j is kept, i.e. when its 16-bit draw (`CounterRandom.dropoutDraw`)
    /// is at least `threshold` (= ⌈p·2¹⁶⌉). Bits past `count` are drawn too and never read. In C
    /// (CCPU's dtrain_dropout.c): comparison lanes to integer bits is one instruction there.
    public static func dropoutMaskRow(_ bits: UnsafeMutablePointer<UInt32>, _ count: Int, key k: UInt64, threshold: UInt32) {
        #if DTRAIN_LANES16
        dtrain_dropout_mask_row_avx512(bits, count, k, threshold)
        #else
        dtrain_dropout_mask_row_avx2(bits, count, k, threshold)
        #endif
    }

    /// Lanes c..<c+L of a row's mask as a vector mask (c a multiple of L).
    @inline(__always)
    static func keptLanes(_ bits: UnsafePointer<UInt32>, _ c: Int) -> SIMDMask<FloatLanes.MaskStorage> {
        #if DTRAIN_LANES16
        let bit = BitLanes(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
        #else
        let bit = BitLanes(1, 2, 4, 8, 16, 32, 64, 128)
        #endif
        let word = bits[c >> 5] >> UInt32(c & 31)
        // A vector on both sides: against a scalar 0, `.!=` compiles to a loop over the lanes.
        return (BitLanes(repeating: word) & bit) .== bit
    }

    @inline(__always)
    static func keptOne(_ bits: UnsafePointer<UInt32>, _ c: Int) -> Bool { (bits[c >> 5] >> UInt32(c & 31)) & 1 != 0 }

    /// One row of inverted dropout from its mask: out[c] = x[c]·scale where kept, else 0.
    public static func dropoutRow(_ out: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ count: Int,
                                  bits: UnsafePointer<UInt32>, scale: Float) {
        let s = splat(scale), zero = splat(0)
        var c = 0
        while c + L <= count {
            store(zero.replacing(with: load(x, c) * s, where: keptLanes(bits, c)), out, c)
            c += L
        }
        while c < count {
            out[c] = keptOne(bits, c) ? x[c] * scale : 0
            c += 1
        }
    }

    /// The row's gradient: dx[c] += g[c]·scale where kept, for c < count.
    public static func dropoutGradientRow(_ dx: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>, _ count: Int,
                                          bits: UnsafePointer<UInt32>, scale: Float) {
        let s = splat(scale), zero = splat(0)
        var c = 0
        while c + L <= count {
            store(load(dx, c) + zero.replacing(with: load(g, c) * s, where: keptLanes(bits, c)), dx, c)
            c += L
        }
        while c < count {
            if keptOne(bits, c) { dx[c] += g[c] * scale }
            c += 1
        }
    }

    /// LoRA's A product through a dropout mask, for rows n in `rows` and 8 of r's rows of A (a
    /// and xa are offset to them; A has row stride IC, xa row stride ldxa):
    /// xa[n, j] = scale·Σ_c A[j, c]·x[n, c] over the kept c (bits: W words per row). Two rows of
    /// x at a time share each load of A; the dropped-out input is never written out.
    public static func loRADroppedA(_ xa: UnsafeMutablePointer<Float>, _ ldxa: Int, _ x: UnsafePointer<Float>,
                                    _ bits: UnsafePointer<UInt32>, _ W: Int, _ a: UnsafePointer<Float>, _ IC: Int,
                                    _ rows: Range<Int>, scale: Float) {
        let zero = splat(0), body = IC / L * L
        let a0 = a, a1 = a + IC, a2 = a + 2 * IC, a3 = a + 3 * IC, a4 = a + 4 * IC, a5 = a + 5 * IC, a6 = a + 6 * IC, a7 = a + 7 * IC
        @inline(__always) func tail(_ n: Int, _ j: Int) -> Float {
            var t: Float = 0
            for c in body..<IC where keptOne(bits + n * W, c) { t += a[j * IC + c] * x[n * IC + c] }
            return t
        }
        @inline(__always) func finish(_ n: Int, _ p0: FloatLanes, _ p1: FloatLanes, _ p2: FloatLanes, _ p3: FloatLanes,
                                      _ p4: FloatLanes, _ p5: FloatLanes, _ p6: FloatLanes, _ p7: FloatLanes) {
            let o = xa + n * ldxa
            o[0] = scale * (p0.sum() + tail(n, 0)); o[1] = scale * (p1.sum() + tail(n, 1))
            o[2] = scale * (p2.sum() + tail(n, 2)); o[3] = scale * (p3.sum() + tail(n, 3))
            o[4] = scale * (p4.sum() + tail(n, 4)); o[5] = scale * (p5.sum() + tail(n, 5))
            o[6] = scale * (p6.sum() + tail(n, 6)); o[7] = scale * (p7.sum() + tail(n, 7))
        }
        var n = rows.lowerBound
        while n + 2 <= rows.upperBound {
            let x0 = x + n * IC, x1 = x0 + IC, m0 = bits + n * W, m1 = m0 + W
            var p0 = zero, p1 = zero, p2 = zero, p3 = zero, p4 = zero, p5 = zero, p6 = zero, p7 = zero
            var q0 = zero, q1 = zero, q2 = zero, q3 = zero, q4 = zero, q5 = zero, q6 = zero, q7 = zero
            var c = 0
            while c < body {
                let u = zero.replacing(with: load(x0, c), where: keptLanes(m0, c))
                let v = zero.replacing(with: load(x1, c), where: keptLanes(m1, c))
                var w = load(a0, c); p0.addProduct(w, u); q0.addProduct(w, v)
                w = load(a1, c); p1.addProduct(w, u); q1.addProduct(w, v)
                w = load(a2, c); p2.addProduct(w, u); q2.addProduct(w, v)
                w = load(a3, c); p3.addProduct(w, u); q3.addProduct(w, v)
                w = load(a4, c); p4.addProduct(w, u); q4.addProduct(w, v)
                w = load(a5, c); p5.addProduct(w, u); q5.addProduct(w, v)
                w = load(a6, c); p6.addProduct(w, u); q6.addProduct(w, v)
                w = load(a7, c); p7.addProduct(w, u); q7.addProduct(w, v)
                c += L
            }
            finish(n, p0, p1, p2, p3, p4, p5, p6, p7)
            finish(n + 1, q0, q1, q2, q3, q4, q5, q6, q7)
            n += 2
        }
        while n < rows.upperBound {
            let x0 = x + n * IC, m0 = bits + n * W
            var p0 = zero, p1 = zero, p2 = zero, p3 = zero, p4 = zero, p5 = zero, p6 = zero, p7 = zero
            var c = 0
            while c < body {
                let u = zero.replacing(with: load(x0, c), where: keptLanes(m0, c))
                p0.addProduct(load(a0, c), u); p1.addProduct(load(a1, c), u); p2.addProduct(load(a2, c), u); p3.addProduct(load(a3, c), u)
                p4.addProduct(load(a4, c), u); p5.addProduct(load(a5, c), u); p6.addProduct(load(a6, c), u); p7.addProduct(load(a7, c), u)
                c += L
            }
            finish(n, p0, p1, p2, p3, p4, p5, p6, p7)
            n += 1
        }
    }

    /// The input gradient through `loRADroppedA`, for rows n in `rows` and 8 of r's columns of
    /// dxa (offset to them, row stride lddxa; a offset to the same rows of A):
    /// dx[n, c] += scale·Σ_j dxa[n, j]·A[j, c] where c is kept.
    public static func loRADroppedInput(_ dx: UnsafeMutablePointer<Float>, _ dxa: UnsafePointer<Float>, _ lddxa: Int,
                                        _ bits: UnsafePointer<UInt32>, _ W: Int, _ a: UnsafePointer<Float>, _ IC: Int,
                                        _ rows: Range<Int>, scale: Float) {
        let zero = splat(0), body = IC / L * L
        let a0 = a, a1 = a + IC, a2 = a + 2 * IC, a3 = a + 3 * IC, a4 = a + 4 * IC, a5 = a + 5 * IC, a6 = a + 6 * IC, a7 = a + 7 * IC
        @inline(__always) func tail(_ n: Int) {
            let g = dxa + n * lddxa, d = dx + n * IC, m = bits + n * W
            for c in body..<IC where keptOne(m, c) {
                var v: Float = 0
                for j in 0..<8 { v += scale * g[j] * a[j * IC + c] }
                d[c] += v
            }
        }
        // Two rows at a time share each load of A.
        var n = rows.lowerBound
        while n + 2 <= rows.upperBound {
            let g = dxa + n * lddxa, h = g + lddxa, d0 = dx + n * IC, d1 = d0 + IC, m0 = bits + n * W, m1 = m0 + W
            let e0 = splat(scale * g[0]), e1 = splat(scale * g[1]), e2 = splat(scale * g[2]), e3 = splat(scale * g[3])
            let e4 = splat(scale * g[4]), e5 = splat(scale * g[5]), e6 = splat(scale * g[6]), e7 = splat(scale * g[7])
            let f0 = splat(scale * h[0]), f1 = splat(scale * h[1]), f2 = splat(scale * h[2]), f3 = splat(scale * h[3])
            let f4 = splat(scale * h[4]), f5 = splat(scale * h[5]), f6 = splat(scale * h[6]), f7 = splat(scale * h[7])
            var c = 0
            while c < body {
                var w = load(a0, c)
                var u = e0 * w, v = f0 * w
                w = load(a1, c); u.addProduct(e1, w); v.addProduct(f1, w)
                w = load(a2, c); u.addProduct(e2, w); v.addProduct(f2, w)
                w = load(a3, c); u.addProduct(e3, w); v.addProduct(f3, w)
                w = load(a4, c); u.addProduct(e4, w); v.addProduct(f4, w)
                w = load(a5, c); u.addProduct(e5, w); v.addProduct(f5, w)
                w = load(a6, c); u.addProduct(e6, w); v.addProduct(f6, w)
                w = load(a7, c); u.addProduct(e7, w); v.addProduct(f7, w)
                store(load(d0, c) + zero.replacing(with: u, where: keptLanes(m0, c)), d0, c)
                store(load(d1, c) + zero.replacing(with: v, where: keptLanes(m1, c)), d1, c)
                c += L
            }
            tail(n); tail(n + 1)
            n += 2
        }
        while n < rows.upperBound {
            let g = dxa + n * lddxa, d = dx + n * IC, m = bits + n * W
            let e0 = splat(scale * g[0]), e1 = splat(scale * g[1]), e2 = splat(scale * g[2]), e3 = splat(scale * g[3])
            let e4 = splat(scale * g[4]), e5 = splat(scale * g[5]), e6 = splat(scale * g[6]), e7 = splat(scale * g[7])
            var c = 0
            while c < body {
                var v = e0 * load(a0, c)
                v.addProduct(e1, load(a1, c)); v.addProduct(e2, load(a2, c)); v.addProduct(e3, load(a3, c))
                v.addProduct(e4, load(a4, c)); v.addProduct(e5, load(a5, c)); v.addProduct(e6, load(a6, c)); v.addProduct(e7, load(a7, c))
                store(load(d, c) + zero.replacing(with: v, where: keptLanes(m, c)), d, c)
                c += L
            }
            tail(n)
            n += 1
        }
    }

    /// The A gradient through `loRADroppedA`, for columns c0..<c1 (c0 a multiple of the lanes)
    /// and 8 of r's rows of dA (da offset to them, row stride IC; dxa offset to the same columns):
    /// da[j, c] += scale·Σ_n dxa[n, j]·x[n, c] over the n where (n, c) is kept, n < N.
    public static func loRADroppedGradA(_ da: UnsafeMutablePointer<Float>, _ dxa: UnsafePointer<Float>, _ lddxa: Int,
                                        _ x: UnsafePointer<Float>, _ bits: UnsafePointer<UInt32>, _ W: Int,
                                        _ N: Int, _ IC: Int, _ c0: Int, _ c1: Int, scale: Float) {
        let zero = splat(0), s = splat(scale)
        var c = c0
        while c + L <= c1 {
            var p0 = zero, p1 = zero, p2 = zero, p3 = zero, p4 = zero, p5 = zero, p6 = zero, p7 = zero
            for n in 0..<N {
                let u = zero.replacing(with: load(x, n * IC + c), where: keptLanes(bits + n * W, c)), g = dxa + n * lddxa
                p0.addProduct(splat(g[0]), u); p1.addProduct(splat(g[1]), u); p2.addProduct(splat(g[2]), u); p3.addProduct(splat(g[3]), u)
                p4.addProduct(splat(g[4]), u); p5.addProduct(splat(g[5]), u); p6.addProduct(splat(g[6]), u); p7.addProduct(splat(g[7]), u)
            }
            @inline(__always) func add(_ j: Int, _ acc: FloatLanes) { store(load(da, j * IC + c) + s * acc, da, j * IC + c) }
            add(0, p0); add(1, p1); add(2, p2); add(3, p3); add(4, p4); add(5, p5); add(6, p6); add(7, p7)
            c += L
        }
        while c < c1 {
            for j in 0..<8 {
                var t: Float = 0
                for n in 0..<N where keptOne(bits + n * W, c) { t += dxa[n * lddxa + j] * x[n * IC + c] }
                da[j * IC + c] += scale * t
            }
            c += 1
        }
    }

    /// LoRA's one-pass backward through B for columns f0..<f1 of dout and 8 of r's columns (the
    /// pointers are offset to them; B and db have row stride r): db[f] += scale·Σ_n dout[n, f]·xa[n]
    /// and out[n] = scale·Σ_f dout[n, f]·B[f], four rows of dout at a time. Eight columns of r
    /// fill a 256-bit register; the AVX-512 build runs the same code with its 32 registers.
    public static func loRAColumns(_ db: UnsafeMutablePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ ldout: Int,
                                   _ dout: UnsafePointer<Float>, _ xa: UnsafePointer<Float>, _ ldxa: Int,
                                   _ b: UnsafePointer<Float>, _ N: Int, _ OC: Int, _ r: Int, _ f0: Int, _ f1: Int,
                                   _ scale: Float) {
        typealias V8 = SIMD8<Float>
        @inline(__always) func ld(_ p: UnsafePointer<Float>, _ i: Int) -> V8 { UnsafeRawPointer(p + i).loadUnaligned(as: V8.self) }
        @inline(__always) func st(_ v: V8, _ p: UnsafeMutablePointer<Float>, _ i: Int) {
            UnsafeMutableRawPointer(p + i).storeBytes(of: v, as: V8.self)
        }
        let s = V8(repeating: scale)
        var n = 0
        while n + 4 <= N {
            let x0 = ld(xa, n * ldxa) * s, x1 = ld(xa, (n + 1) * ldxa) * s
            let x2 = ld(xa, (n + 2) * ldxa) * s, x3 = ld(xa, (n + 3) * ldxa) * s
            let d0 = dout + n * OC, d1 = d0 + OC, d2 = d1 + OC, d3 = d2 + OC
            var a0 = V8(), a1 = V8(), a2 = V8(), a3 = V8()
            for f in f0..<f1 {
                let bf = ld(b, f * r)
                let e0 = V8(repeating: d0[f]), e1 = V8(repeating: d1[f])
                let e2 = V8(repeating: d2[f]), e3 = V8(repeating: d3[f])
                a0.addProduct(e0, bf); a1.addProduct(e1, bf); a2.addProduct(e2, bf); a3.addProduct(e3, bf)
                var g = ld(db, f * r)
                g.addProduct(e0, x0); g.addProduct(e1, x1); g.addProduct(e2, x2); g.addProduct(e3, x3)
                st(g, db, f * r)
            }
            st(a0 * s, out, n * ldout); st(a1 * s, out, (n + 1) * ldout)
            st(a2 * s, out, (n + 2) * ldout); st(a3 * s, out, (n + 3) * ldout)
            n += 4
        }
        while n < N {
            let x0 = ld(xa, n * ldxa) * s, d0 = dout + n * OC
            var a0 = V8()
            for f in f0..<f1 {
                let e0 = V8(repeating: d0[f])
                a0.addProduct(e0, ld(b, f * r))
                var g = ld(db, f * r)
                g.addProduct(e0, x0)
                st(g, db, f * r)
            }
            st(a0 * s, out, n * ldout)
            n += 1
        }
    }
}
