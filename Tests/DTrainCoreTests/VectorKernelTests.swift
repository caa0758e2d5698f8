import DTrainTestSupport
import Foundation
import Testing
@testable import DTrainCore

/// The vector kernels at both widths against plain per-element formulas, and against each other.
///
/// The AVX-512 set runs only on a CPU that has AVX-512 (it would fault elsewhere); on one that
/// lacks it, the test says so in its output and checks the AVX2 set alone.
struct VectorKernelTests {
    /// The sets this CPU can run: AVX2 always, AVX-512 where present.
    static var sets: [(name: String, kernels: any VectorKernelSet.Type)] {
        var s: [(String, any VectorKernelSet.Type)] = [("avx2", Vectors.avx2)]
        if MachineKernels.cpu.level >= .avx512 {
            s.append(("avx512", Vectors.avx512))
        } else {
            print("VectorKernelTests: this CPU has no AVX-512 (\(MachineKernels.cpu.description)); only the AVX2 kernels are checked")
        }
        return s
    }

    static let lengths = [0, 1, 5, 8, 13, 16, 17, 31, 32, 64, 100, 576]

    func expectClose(_ a: [Float], _ e: [Float], _ tol: Double, _ label: String) {
        let c = compare(a, e, label: label)
        #expect(c.shapeMatches && c.maxRelToScale <= tol, "\(c)")
    }

    @Test func lanesMatchTheirModules() {
        #expect(Vectors.avx2.lanes == 8)
        #expect(Vectors.avx512.lanes == 16)
        #expect(Vectors.kernels.lanes == (MachineKernels.cpu.level >= .avx512 && getenv("DTRAIN_VECTOR_BITS") == nil ? 16 : 8))
    }

    /// Reductions against double-precision sums.
    @Test func reductions() {
        for (name, K) in Self.sets {
            for n in Self.lengths {
                let a = randomFloats(n, seed: 1), b = randomFloats(n, seed: 2), c = randomFloats(n, seed: 3)
                let dot = Double(K.dot(a, b, n)), dot3 = Double(K.dot3(a, b, c, n))
                var refDot = 0.0, refDot3 = 0.0, scale = 0.0
                for i in 0..<n {
                    refDot += Double(a[i]) * Double(b[i])
                    refDot3 += Double(a[i]) * Double(b[i]) * Double(c[i])
                    scale += abs(Double(a[i]) * Double(b[i]))
                }
                #expect(abs(dot - refDot) <= 1e-6 * max(scale, 1), "\(name) dot n=\(n): \(dot) vs \(refDot)")
                #expect(abs(dot3 - refDot3) <= 1e-6 * max(scale, 1), "\(name) dot3 n=\(n): \(dot3) vs \(refDot3)")
                #expect(K.max(a, n) == (a.max() ?? -.infinity), "\(name) max n=\(n)")
            }
            let g = randomFloats(1024, seed: 4)
            let ss = K.sumOfSquares(g, 1024), ref = g.reduce(0.0) { $0 + Double($1) * Double($1) }
            #expect(abs(ss - ref) <= 1e-6 * ref, "\(name) sumOfSquares: \(ss) vs \(ref)")
        }
    }

    /// exp-based kernels against expf: within a few ulp.
    @Test func exponentials() {
        for (name, K) in Self.sets {
            for n in Self.lengths {
                let src = randomFloats(n, seed: 5, scale: 20)
                var dst = [Float](repeating: 0, count: n)
                let sum = K.expShifted(&dst, src, n, shift: 3)
                let ref = src.map { expf($0 - 3) }
                expectClose(dst, ref, 1e-6, "\(name) expShifted n=\(n)")
                let refSum = ref.reduce(0.0) { $0 + Double($1) }
                #expect(abs(Double(sum) - refSum) <= 1e-5 * max(refSum, 1), "\(name) expShifted sum n=\(n)")

                let gate = randomFloats(n, seed: 6, scale: 6), up = randomFloats(n, seed: 7), dout = randomFloats(n, seed: 8)
                var out = [Float](repeating: 0, count: n), dg = out, du = out, h = out
                K.swiGLU(&out, gate, up, 0, n)
                K.swiGLUBackward(&dg, &du, &h, dout, gate, up, 0, n)
                let sig = gate.map { 1 / (1 + expf(-$0)) }
                var eo = [Float](repeating: 0, count: n), edg = eo, edu = eo
                for i in 0..<n {
                    eo[i] = gate[i] * sig[i] * up[i]
                    edg[i] = dout[i] * up[i] * sig[i] * (1 + gate[i] * (1 - sig[i]))
                    edu[i] = dout[i] * gate[i] * sig[i]
                }
                expectClose(out, eo, 1e-6, "\(name) swiGLU n=\(n)")
                #expect(h == out, "\(name): swiGLUBackward rebuilds forward's output bit for bit (n=\(n))")
                expectClose(dg, edg, 1e-5, "\(name) swiGLU dgate n=\(n)")
                expectClose(du, edu, 1e-5, "\(name) swiGLU dup n=\(n)")

                var p = randomFloats(n, seed: 9), dp = randomFloats(n, seed: 10)
                let p0 = p, dp0 = dp
                K.softmaxGradientRow(&p, &dp, n, lse: 0.5, rowDot: 0.25)
                var ep = [Float](repeating: 0, count: n), edp = ep
                for i in 0..<n { ep[i] = expf(p0[i] - 0.5); edp[i] = ep[i] * (dp0[i] - 0.25) }
                expectClose(p, ep, 1e-6, "\(name) softmaxGradientRow p n=\(n)")
                expectClose(dp, edp, 1e-5, "\(name) softmaxGradientRow dp n=\(n)")
            }
        }
    }

    /// Per-element kernels: each lane does the scalar formula, so the result is that formula's, bit for bit.
    @Test func elementwiseEqualTheFormulaBitForBit() {
        for (name, K) in Self.sets {
            for n in Self.lengths {
                let x = randomFloats(n, seed: 11), w = randomFloats(n, seed: 12), dy = randomFloats(n, seed: 13)
                let acc0 = randomFloats(n, seed: 14)
                var y = [Float](repeating: 0, count: n)
                K.scaleRow(&y, x, 0.7, w, n)
                let rs: Float = 0.7
                let scaled: [Float] = (0..<n).map { i in x[i] * rs * w[i] }
                #expect(y == scaled, "\(name) scaleRow n=\(n)")
                var dx = acc0
                K.normGradientRow(&dx, dy, x, w, r: 0.7, k: 0.3, n)
                let kk: Float = 0.3
                var normGrad = [Float](repeating: 0, count: n)
                for i in 0..<n { normGrad[i] = acc0[i] + (rs * dy[i] * w[i] - kk * x[i]) }
                #expect(dx == normGrad, "\(name) normGradientRow n=\(n)")
                var acc = acc0
                K.addScaledProduct(&acc, dy, x, 0.7, n)
                var product = [Float](repeating: 0, count: n)
                for i in 0..<n { product[i] = acc0[i] + dy[i] * x[i] * rs }
                #expect(acc == product, "\(name) addScaledProduct n=\(n)")
                K.scale(&y, x, 1.5, n)
                #expect(y == x.map { $0 * 1.5 }, "\(name) scale n=\(n)")
                acc = acc0
                K.add(&acc, x, n)
                var sum = [Float](repeating: 0, count: n)
                for i in 0..<n { sum[i] = acc0[i] + x[i] }
                #expect(acc == sum, "\(name) add n=\(n)")
                acc = acc0
                K.addDifference(&acc, 0.5, x, 0.25, w, n)
                let fa: Float = 0.5, fb: Float = 0.25
                var diff = [Float](repeating: 0, count: n)
                for i in 0..<n { diff[i] = acc0[i] + (fa * x[i] - fb * w[i]) }
                #expect(acc == diff, "\(name) addDifference n=\(n)")
                var p = [Float](repeating: 0, count: n), dp = dy
                K.scaledGradientRow(&p, &dp, x, n, rowScale: 0.5, rowDot: 0.1)
                let ps: Float = 0.5, pd: Float = 0.1
                var pe = [Float](repeating: 0, count: n), dpe = pe
                for i in 0..<n { pe[i] = x[i] * ps; dpe[i] = pe[i] * (dy[i] - pd) }
                #expect(p == pe && dp == dpe, "\(name) scaledGradientRow n=\(n)")
            }
        }
    }

    /// The two widths give the same bits wherever no sum crosses lanes and the lengths are whole
    /// vectors of both (multiples of 16), so a model's element-wise results differ between them
    /// only through reductions.
    @Test func widthsAgreeBitForBitOnWholeVectors() {
        let sets = Self.sets
        guard sets.count == 2 else { return }
        let (a, b) = (sets[0].kernels, sets[1].kernels)
        let n = 4096
        let gate = randomFloats(n, seed: 20, scale: 8), up = randomFloats(n, seed: 21), dout = randomFloats(n, seed: 22)
        var o1 = [Float](repeating: 0, count: n), o2 = o1, g1 = o1, g2 = o1, u1 = o1, u2 = o1, h1 = o1, h2 = o1
        a.swiGLU(&o1, gate, up, 0, n); b.swiGLU(&o2, gate, up, 0, n)
        a.swiGLUBackward(&g1, &u1, &h1, dout, gate, up, 0, n); b.swiGLUBackward(&g2, &u2, &h2, dout, gate, up, 0, n)
        #expect(o1 == o2 && g1 == g2 && u1 == u2 && h1 == h2)
        var e1 = o1, e2 = o1
        _ = a.expShifted(&e1, gate, n, shift: 1); _ = b.expShifted(&e2, gate, n, shift: 1)
        #expect(e1 == e2)
        var p1 = gate, p2 = gate, d1 = dout, d2 = dout
        a.softmaxGradientRow(&p1, &d1, n, lse: 2, rowDot: 0.3); b.softmaxGradientRow(&p2, &d2, n, lse: 2, rowDot: 0.3)
        #expect(p1 == p2 && d1 == d2)
        // AdamW and LoRA's one-pass columns.
        var pa = randomFloats(n, seed: 23), ma = randomFloats(n, seed: 24), va = randomFloats(n, seed: 25).map { $0 * $0 }
        var pb = pa, mb = ma, vb = va
        a.adamW(&pa, &ma, &va, dout, 0, n, beta1: 0.9, beta2: 0.95, gradScale: 0.5, decay: 0.999, stepSize: 1e-3, bc2Sqrt: 0.3, eps: 1e-8)
        b.adamW(&pb, &mb, &vb, dout, 0, n, beta1: 0.9, beta2: 0.95, gradScale: 0.5, decay: 0.999, stepSize: 1e-3, bc2Sqrt: 0.3, eps: 1e-8)
        #expect(pa == pb && ma == mb && va == vb)
        let N = 37, OC = 96, r = 8
        let dO = randomFloats(N * OC, seed: 26), xa = randomFloats(N * r, seed: 27), bw = randomFloats(OC * r, seed: 28)
        var db1 = randomFloats(OC * r, seed: 29), db2 = db1, out1 = [Float](repeating: 0, count: N * r), out2 = out1
        a.loRAColumns(&db1, &out1, r, dO, xa, r, bw, N, OC, r, 0, OC, 0.5)
        b.loRAColumns(&db2, &out2, r, dO, xa, r, bw, N, OC, r, 0, OC, 0.5)
        #expect(db1 == db2 && out1 == out2)
    }

    /// Dropout's vector rows draw exactly the mask `CounterRandom.dropoutDraw(k, c) ≥ ⌈p·2¹⁶⌉`
    /// describes (so both widths draw the same bits), and apply it as the scalar formula does,
    /// bit for bit.
    @Test func dropoutRowsEqualTheScalarDraws() {
        for (name, K) in Self.sets {
            for p: Float in [0.05, 0.1, 0.25, 1.0 / 3, 0.5] {
                let t = UInt32((p * 65536).rounded(.up)), s = 1 / (1 - p)
                for n in [0, 5, 16, 17, 32, 100, 576] {
                    let k = CounterRandom.key(11, UInt64(n))
                    let x = randomFloats(n, seed: 30), g = randomFloats(n, seed: 31), d0 = randomFloats(n, seed: 32)
                    var bits = [UInt32](repeating: 0, count: Dropout.wordsPerRow(n))
                    K.dropoutMaskRow(&bits, n, key: k, threshold: t)
                    var out = [Float](repeating: 7, count: n), d = d0
                    K.dropoutRow(&out, x, n, bits: bits, scale: s)
                    K.dropoutGradientRow(&d, g, n, bits: bits, scale: s)
                    var eo = [Float](repeating: 0, count: n), ed = d0, maskAgrees = true
                    for c in 0..<n {
                        let drop = CounterRandom.dropoutDraw(k, c) < t
                        if drop == ((bits[c / 32] >> UInt32(c % 32)) & 1 == 1) { maskAgrees = false }
                        eo[c] = drop ? 0 : x[c] * s
                        if !drop { ed[c] += g[c] * s }
                    }
                    #expect(maskAgrees, "\(name) dropout mask p=\(p) n=\(n)")
                    #expect(out == eo && d == ed, "\(name) dropout p=\(p) n=\(n)")
                }
            }
        }
    }

    /// The fused LoRA-through-dropout kernels equal their formulas on the mask's bits, at both
    /// widths, for row counts and widths that leave odd rows and column tails.
    @Test func loRADroppedKernelsEqualTheirFormulas() {
        for (name, K) in Self.sets {
            for (N, IC) in [(5, 40), (4, 37), (3, 64)] {
                let W = Dropout.wordsPerRow(IC), r = 8, s: Float = 1.25
                var bits = [UInt32](repeating: 0, count: N * W)
                for n in 0..<N { bits.withUnsafeMutableBufferPointer { K.dropoutMaskRow($0.baseAddress! + n * W, IC, key: CounterRandom.key(5, UInt64(n)), threshold: 20000) } }
                let kept = { (n: Int, c: Int) -> Bool in (bits[n * W + c / 32] >> UInt32(c % 32)) & 1 == 1 }
                let x = randomFloats(N * IC, seed: 40), a = randomFloats(r * IC, seed: 41), g = randomFloats(N * r, seed: 42)
                let dx0 = randomFloats(N * IC, seed: 43), da0 = randomFloats(r * IC, seed: 44)
                var xa = [Float](repeating: 0, count: N * r), dx = dx0, da = da0
                K.loRADroppedA(&xa, r, x, bits, W, a, IC, 0..<N, scale: s)
                K.loRADroppedInput(&dx, g, r, bits, W, a, IC, 0..<N, scale: s)
                K.loRADroppedGradA(&da, g, r, x, bits, W, N, IC, 0, IC, scale: s)
                var exa = [Float](repeating: 0, count: N * r), edx = dx0, eda = da0
                for n in 0..<N {
                    for j in 0..<r {
                        var t: Double = 0
                        for c in 0..<IC where kept(n, c) { t += Double(a[j * IC + c]) * Double(x[n * IC + c]) }
                        exa[n * r + j] = Float(Double(s) * t)
                    }
                    for c in 0..<IC where kept(n, c) {
                        var t: Double = 0
                        for j in 0..<r { t += Double(g[n * r + j]) * Double(a[j * IC + c]) }
                        edx[n * IC + c] += Float(Double(s) * t)
                    }
                }
                for j in 0..<r {
                    for c in 0..<IC {
                        var t: Double = 0
                        for n in 0..<N where kept(n, c) { t += Double(g[n * r + j]) * Double(x[n * IC + c]) }
                        eda[j * IC + c] += Float(Double(s) * t)
                    }
                }
                for (label, got, want) in [("A", xa, exa), ("input", dx, edx), ("grad A", da, eda)] {
                    let c = compare(got, want, label: "\(name) loRADropped \(label) N=\(N) IC=\(IC)")
                    #expect(c.maxAbs < 1e-4, "\(c)")
                }
            }
        }
    }

    /// The 16-bit dropout draw drops p of the elements overall, of every row and of every column
    /// (rows' keys differ only in the token's key, columns only in the index), to within a few
    /// standard deviations.
    @Test func dropoutDrawsDropTheirShareInEveryRowAndColumn() {
        let rows = 512, cols = 576, p: Float = 0.05, t = UInt32((p * 65536).rounded(.up))
        let layerKey = CounterRandom.key(7, 3, 1)
        var perColumn = [Int](repeating: 0, count: cols), total = 0
        for n in 0..<rows {
            let k = layerKey ^ CounterRandom.mix(UInt64(n))
            var inRow = 0
            for c in 0..<cols where CounterRandom.dropoutDraw(k, c) < t { inRow += 1; perColumn[c] += 1 }
            total += inRow
            // Binomial(576, 0.05): mean 28.8, sd 5.2.
            #expect((5...60).contains(inRow), "row \(n) dropped \(inRow) of \(cols)")
        }
        let fraction = Double(total) / Double(rows * cols)
        #expect(abs(fraction - 0.05) < 0.002, "dropped \(fraction)")
        // Binomial(512, 0.05): mean 25.6, sd 4.9.
        #expect(perColumn.allSatisfy { (4...55).contains($0) }, "\(perColumn.min()!)...\(perColumn.max()!)")
    }
}
