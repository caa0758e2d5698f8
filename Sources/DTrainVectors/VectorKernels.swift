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
    /// matrix streamed once. Blocks of four matrix rows take two rows of a at a time (eight
    /// independent sums, so even one row of a keeps the FMA units busy). Every (m, n) is one
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
        var n = n0
        while n + 4 <= n1 {
            let b0 = b + n * ldb, b1 = b0 + ldb, b2 = b1 + ldb, b3 = b2 + ldb
            var m = 0
            while m + 2 <= M {
                let x0 = a + m * lda, x1 = x0 + lda
                var s00 = splat(0), s01 = splat(0), s02 = splat(0), s03 = splat(0)
                var s10 = splat(0), s11 = splat(0), s12 = splat(0), s13 = splat(0)
                var k = 0
                while k < body {
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

    /// Which of `FloatLanes.scalarCount` elements, from column c0 of a row with dropout key k, are
    /// dropped: element c is dropped when the top 24 bits of lowbias32(fold(k) ^ c·0x9E3779B9)
    /// are below `threshold` (= ⌈p·2²⁴⌉), the same draw as `CounterRandom.dropoutBits(k, c)`.
    /// 32-bit products: a vector does twice as many lanes as with 64-bit ones, and AVX2 has no
    /// 64-bit product at all.
    @inline(__always)
    static func dropped(_ k: UInt64, _ c0: Int, _ threshold: UInt32) -> SIMDMask<FloatLanes.MaskStorage> {
        #if DTRAIN_LANES16
        let lane = BitLanes(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
        #else
        let lane = BitLanes(0, 1, 2, 3, 4, 5, 6, 7)
        #endif
        var x = BitLanes(repeating: UInt32(truncatingIfNeeded: k ^ (k >> 32)))
            ^ ((lane &+ UInt32(truncatingIfNeeded: c0)) &* 0x9E37_79B9)
        x = (x ^ (x &>> 16)) &* 0x7FEB_352D
        x = (x ^ (x &>> 15)) &* 0x846C_A68B
        x = x ^ (x &>> 16)
        return unsafeBitCast((x &>> 8) .< BitLanes(repeating: threshold), to: SIMDMask<FloatLanes.MaskStorage>.self)
    }

    /// One row of inverted dropout: out[c] = 0 where dropped, else x[c]·scale, for c < count.
    public static func dropoutRow(_ out: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ count: Int,
                                  key k: UInt64, threshold: UInt32, scale: Float) {
        let s = splat(scale)
        var c = 0
        while c + L <= count {
            var v = load(x, c) * s
            v.replace(with: 0, where: dropped(k, c, threshold))
            store(v, out, c)
            c += L
        }
        while c < count {
            out[c] = droppedOne(k, c, threshold) ? 0 : x[c] * scale
            c += 1
        }
    }

    /// The row's gradient: dx[c] += g[c]·scale where kept, for c < count.
    public static func dropoutGradientRow(_ dx: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>, _ count: Int,
                                          key k: UInt64, threshold: UInt32, scale: Float) {
        let s = splat(scale)
        var c = 0
        while c + L <= count {
            var v = load(g, c) * s
            v.replace(with: 0, where: dropped(k, c, threshold))
            store(load(dx, c) + v, dx, c)
            c += L
        }
        while c < count {
            if !droppedOne(k, c, threshold) { dx[c] += g[c] * scale }
            c += 1
        }
    }

    @inline(__always)
    static func droppedOne(_ k: UInt64, _ c: Int, _ threshold: UInt32) -> Bool {
        var x = UInt32(truncatingIfNeeded: k ^ (k >> 32)) ^ (UInt32(truncatingIfNeeded: c) &* 0x9E37_79B9)
        x = (x ^ (x >> 16)) &* 0x7FEB_352D
        x = (x ^ (x >> 15)) &* 0x846C_A68B
        x = x ^ (x >> 16)
        return x >> 8 < threshold
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
