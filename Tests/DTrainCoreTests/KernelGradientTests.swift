import DTrainCore
import DTrainTestSupport
import Testing

/// Every kernel's backward against central finite differences of its forward.
@Suite struct KernelGradientTests {
    @Test func embedding() {
        let N = 5, C = 3, V = 4
        let wte = Buf(randomFloats(V * C, seed: 1))
        let ids: [Int32] = [0, 2, 2, 3, 1]
        let w = randomFloats(N * C, seed: 2)
        let out = Buf(zeros: N * C)
        let dwte = Buf(zeros: V * C)
        Embedding.backward(dwte.p, w, ids, N, C)
        let numeric = numericGradient(wte.p, V * C) {
            Embedding.forward(out.p, ids, wte.p, N, C)
            return weightedSum(out.p, w)
        }
        expectGradient(dwte.array, numeric, "embedding dwte")
    }

    /// C = 8 fills the eight-lane loops exactly; 19 also runs their scalar tails, and 5 only those.
    @Test(arguments: [8, 19, 5])
    func rmsNorm(C: Int) {
        let N = 3
        let x = Buf(randomFloats(N * C, seed: 3)), weight = Buf(randomFloats(C, seed: 4))
        let w = randomFloats(N * C, seed: 5)
        let out = Buf(zeros: N * C), rstd = Buf(zeros: N)
        let loss = { () -> Double in
            RMSNorm.forward(out.p, rstd.p, x.p, weight.p, N, C, 1e-5)
            return weightedSum(out.p, w)
        }
        _ = loss()
        let dx = Buf(zeros: N * C), dweight = Buf(zeros: C)
        RMSNorm.backward(dx.p, dweight.p, w, x.p, weight.p, rstd.p, N, C)
        expectGradient(dx.array, numericGradient(x.p, N * C, eps: 1e-3, loss), "rmsnorm dx, C = \(C)")
        expectGradient(dweight.array, numericGradient(weight.p, C, eps: 1e-3, loss), "rmsnorm dweight, C = \(C)")
    }

    @Test func rope() {
        let N = 4, H = 2, HD = 8
        let (cosT, sinT) = RoPE.makeTables(maxPositions: 16, headDim: HD, theta: 10000)
        let positions: [Int32] = [0, 3, 7, 15]
        let x = Buf(randomFloats(N * H * HD, seed: 6))
        let w = randomFloats(N * H * HD, seed: 7)
        let loss = { () -> Double in
            let y = Buf(x.array)
            RoPE.forward(y.p, positions, cosT, sinT, N, H, HD)
            return weightedSum(y.p, w)
        }
        let dx = Buf(w)
        RoPE.backward(dx.p, positions, cosT, sinT, N, H, HD)
        expectGradient(dx.array, numericGradient(x.p, x.count, loss), "rope dx")
    }

    @Test(arguments: [false, true], [false, true])
    func attention(packed: Bool, keep: Bool) {
        // Grouped-query: 4 query heads share 2 key/value heads.
        let B = 2, T = 5, NH = 4, KVH = 2, HD = 4
        let qDim = NH * HD, kvDim = KVH * HD
        let q = Buf(randomFloats(B * T * qDim, seed: 8)), k = Buf(randomFloats(B * T * kvDim, seed: 9))
        let v = Buf(randomFloats(B * T * kvDim, seed: 10))
        let w = randomFloats(B * T * qDim, seed: 11)
        // Packed: row 0 holds examples [0, 2) and [2, 5); row 1 one example.
        let seg: [Int32]? = packed ? [0, 0, 2, 2, 2, 0, 0, 0, 0, 0] : nil
        let out = Buf(zeros: B * T * qDim), lse = Buf(zeros: B * NH * T)
        let scratch = Buf(zeros: Attention.scratchCount(T: T, HD: HD, group: NH / KVH))
        let kept = Buf(zeros: Attention.keptCount(B: B, T: T, NH: NH, KVH: KVH))
        let loss = { () -> Double in
            seg.withOptionalPointer { s in
                Attention.forward(out.p, lse.p, keep ? kept.p : nil, q.p, k.p, v.p, s, scratch.p, B, T, NH, KVH, HD)
            }
            return weightedSum(out.p, w)
        }
        _ = loss()
        let dq = Buf(zeros: q.count), dk = Buf(zeros: k.count)
        let dv = Buf(zeros: v.count)
        seg.withOptionalPointer { s in
            Attention.backward(dq.p, dk.p, dv.p, w, out.p, lse.p, keep ? kept.p : nil, q.p, k.p, v.p, s, scratch.p, B, T, NH, KVH, HD)
        }
        expectGradient(dq.array, numericGradient(q.p, q.count, eps: 1e-3, loss), "attention dq")
        expectGradient(dk.array, numericGradient(k.p, k.count, eps: 1e-3, loss), "attention dk")
        expectGradient(dv.array, numericGradient(v.p, v.count, eps: 1e-3, loss), "attention dv")
    }

    /// Backward from the probabilities forward kept equals backward recomputing them, over several
    /// query blocks (the last one partial) and packed rows, where the kept layout's offsets matter.
    /// The kept run's backward gets zeroed log-sum-exps, so it can only match by using what was kept.
    @Test func attentionKeptProbabilitiesMatchRecomputed() {
        let B = 2, T = 150, NH = 6, KVH = 2, HD = 8, qDim = NH * HD, kvDim = KVH * HD
        let q = Buf(randomFloats(B * T * qDim, seed: 50)), k = Buf(randomFloats(B * T * kvDim, seed: 51))
        let v = Buf(randomFloats(B * T * kvDim, seed: 52)), w = randomFloats(B * T * qDim, seed: 53)
        let seg: [Int32] = (0..<(B * T)).map { i in let t = i % T; return i < T ? Int32(t < 70 ? 0 : 70) : 0 }
        let scratch = Buf(zeros: Attention.scratchCount(T: T, HD: HD, group: NH / KVH))
        let kept = Buf(zeros: Attention.keptCount(B: B, T: T, NH: NH, KVH: KVH))
        var results: [[Float]] = []
        for keep in [false, true] {
            let out = Buf(zeros: B * T * qDim), lse = Buf(zeros: B * NH * T)
            Attention.forward(out.p, lse.p, keep ? kept.p : nil, q.p, k.p, v.p, seg, scratch.p, B, T, NH, KVH, HD)
            let dq = Buf(zeros: q.count), dk = Buf(zeros: k.count), dv = Buf(zeros: v.count)
            let backwardLSE = keep ? Buf(zeros: lse.count) : lse
            Attention.backward(dq.p, dk.p, dv.p, w, out.p, backwardLSE.p, keep ? kept.p : nil, q.p, k.p, v.p, seg, scratch.p,
                               B, T, NH, KVH, HD)
            results.append(out.array + dq.array + dk.array + dv.array)
        }
        let c = compare(results[1], results[0], label: "attention output and gradients, kept vs recomputed probabilities")
        #expect(c.maxRelToScale < 1e-5, "\(c)")
    }

    /// Attention's (batch row, key/value head) pairs split across workers give the same bits as
    /// one worker, with and without kept probabilities: a pair's arithmetic never depends on
    /// which worker ran it, and each worker's scratch is its own.
    @Test func attentionWorkersMatchOneWorker() {
        let B = 2, T = 150, NH = 6, KVH = 2, HD = 8, qDim = NH * HD, kvDim = KVH * HD
        let q = Buf(randomFloats(B * T * qDim, seed: 60)), k = Buf(randomFloats(B * T * kvDim, seed: 61))
        let v = Buf(randomFloats(B * T * kvDim, seed: 62)), w = randomFloats(B * T * qDim, seed: 63)
        for keep in [false, true] {
            var results: [[Float]] = []
            for threads in [1, 3] {
                let scratch = Buf(zeros: Attention.scratchCount(T: T, HD: HD, group: NH / KVH, threads: threads))
                let kept = Buf(zeros: Attention.keptCount(B: B, T: T, NH: NH, KVH: KVH))
                let out = Buf(zeros: B * T * qDim), lse = Buf(zeros: B * NH * T)
                Attention.forward(out.p, lse.p, keep ? kept.p : nil, q.p, k.p, v.p, nil, scratch.p, B, T, NH, KVH, HD, threads: threads)
                let dq = Buf(zeros: q.count), dk = Buf(zeros: k.count), dv = Buf(zeros: v.count)
                Attention.backward(dq.p, dk.p, dv.p, w, out.p, lse.p, keep ? kept.p : nil, q.p, k.p, v.p, nil, scratch.p,
                                   B, T, NH, KVH, HD, threads: threads)
                results.append(out.array + lse.array + dq.array + dk.array + dv.array)
            }
            let c = compare(results[1], results[0], label: "attention, 3 workers vs 1 (kept: \(keep))")
            #expect(c.maxAbs == 0, "\(c)")
        }
    }

    @Test func attentionPackingIsolatesExamples() {
        // A packed row must give each example the output it would get alone.
        let T = 5, NH = 2, KVH = 1, HD = 4, qDim = NH * HD, kvDim = KVH * HD
        let q = randomFloats(T * qDim, seed: 12), k = randomFloats(T * kvDim, seed: 13), v = randomFloats(T * kvDim, seed: 14)
        let scratch = Buf(zeros: Attention.scratchCount(T: T, HD: HD, group: NH / KVH))
        let packedOut = Buf(zeros: T * qDim), lse = Buf(zeros: NH * T)
        let seg: [Int32] = [0, 0, 2, 2, 2]
        Attention.forward(packedOut.p, lse.p, nil, q, k, v, seg, scratch.p, 1, T, NH, KVH, HD)
        let alone = Buf(zeros: 3 * qDim), lse3 = Buf(zeros: NH * 3)
        Attention.forward(alone.p, lse3.p, nil, Array(q[(2 * qDim)...]), Array(k[(2 * kvDim)...]), Array(v[(2 * kvDim)...]),
                          nil, scratch.p, 1, 3, NH, KVH, HD)
        let c = compare(Array(packedOut.array[(2 * qDim)...]), alone.array, label: "second packed example vs alone")
        #expect(c.maxAbs < 1e-6, "\(c)")
    }

    @Test func swiglu() {
        let n = 12
        let gate = Buf(randomFloats(n, seed: 15, scale: 3)), up = Buf(randomFloats(n, seed: 16))
        let w = randomFloats(n, seed: 17)
        let out = Buf(zeros: n)
        let loss = { () -> Double in
            SwiGLU.forward(out.p, gate.p, up.p, n)
            return weightedSum(out.p, w)
        }
        let dgate = Buf(zeros: n), dup = Buf(zeros: n), rebuilt = Buf(zeros: n)
        SwiGLU.backward(dgate.p, dup.p, rebuilt.p, w, gate.p, up.p, n)
        expectGradient(dgate.array, numericGradient(gate.p, n, eps: 1e-3, loss), "swiglu dgate")
        expectGradient(dup.array, numericGradient(up.p, n, eps: 1e-3, loss), "swiglu dup")
        // backward rebuilds the forward's output on the way.
        _ = loss()
        let h = compare(rebuilt.array, out.array, label: "swiglu h rebuilt in backward")
        #expect(h.maxAbs == 0, "\(h)")
    }

    @Test func linear() {
        let N = 3, IC = 5, OC = 4
        let x = Buf(randomFloats(N * IC, seed: 18)), weight = Buf(randomFloats(OC * IC, seed: 19)), bias = Buf(randomFloats(OC, seed: 20))
        let w = randomFloats(N * OC, seed: 21)
        let out = Buf(zeros: N * OC)
        let loss = { () -> Double in
            Linear.forward(out.p, x.p, weight.p, bias.p, N, IC, OC)
            return weightedSum(out.p, w)
        }
        let dx = Buf(zeros: x.count), dw = Buf(zeros: weight.count)
        let db = Buf(zeros: OC)
        Linear.backward(dx.p, dw.p, db.p, w, x.p, weight.p, N, IC, OC)
        expectGradient(dx.array, numericGradient(x.p, x.count, loss), "linear dx")
        expectGradient(dw.array, numericGradient(weight.p, weight.count, loss), "linear dweight")
        expectGradient(db.array, numericGradient(bias.p, OC, loss), "linear dbias")
    }

    @Test func lora() {
        let N = 3, IC = 6, OC = 5, r = 2
        let x = Buf(randomFloats(N * IC, seed: 22)), a = Buf(randomFloats(r * IC, seed: 23)), b = Buf(randomFloats(OC * r, seed: 24))
        let w = randomFloats(N * OC, seed: 25)
        let xa = Buf(zeros: N * r)
        let loss = { () -> Double in
            let out = Buf(zeros: N * OC)
            LoRA.forward(out.p, xa.p, x.p, a.p, b.p, N, IC, OC, r, scale: 1.5)
            return weightedSum(out.p, w)
        }
        _ = loss()
        let dx = Buf(zeros: x.count), da = Buf(zeros: a.count)
        let db = Buf(zeros: b.count), dxa = Buf(zeros: N * r)
        LoRA.backward(dx.p, da.p, db.p, dxa.p, w, x.p, xa.p, a.p, b.p, N, IC, OC, r, scale: 1.5)
        expectGradient(dx.array, numericGradient(x.p, x.count, loss), "lora dx")
        expectGradient(da.array, numericGradient(a.p, a.count, loss), "lora dA")
        expectGradient(db.array, numericGradient(b.p, b.count, loss), "lora dB")
    }

    /// The one-pass LoRA B backward against its two-sgemm form: 8 and 16 columns of r, a row
    /// count that leaves a remainder, strided ∂/∂xa inside a group's block, and a 3-way column split.
    @Test(arguments: [8, 16]) func loraOnePassMatchesSgemms(r: Int) {
        let N = 7, OC = 200, R = 2 * r, scale: Float = 0.75
        let dout = Buf(randomFloats(N * OC, seed: 40)), xa = Buf(randomFloats(N * R, seed: 41)), b = Buf(randomFloats(OC * r, seed: 42))
        let dbStart = randomFloats(OC * r, seed: 43)
        let dbWant = Buf(dbStart), dxaWant = Buf(zeros: N * R)
        LoRA.backwardB(dbWant.p, dxaWant.p + r, R, dout.p, xa.p + r, R, b.p, N, OC, r, scale: scale)
        let threads = 3
        let dbGot = Buf(dbStart), dxaGot = Buf(zeros: N * R)
        let scratch = Buf(zeros: LoRA.backwardScratchCount(N: N, threads: threads))
        LoRA.backwardB(dbGot.p, dxaGot.p + r, R, dout.p, xa.p + r, R, b.p, N, OC, r, scale: scale,
                       scratch: scratch.p, scratchThreads: threads)
        let dbCompare = compare(dbGot.array, dbWant.array, label: "lora one-pass dB (r \(r))")
        let dxaCompare = compare(dxaGot.array, dxaWant.array, label: "lora one-pass dxa (r \(r))")
        #expect(dbCompare.maxRelToScale < 1e-6, "\(dbCompare)")
        #expect(dxaCompare.maxRelToScale < 1e-6, "\(dxaCompare)")
    }

    @Test func crossEntropyHead() {
        // 4 rows, 3 of them labelled; chunks of 2 rows exercise the chunk boundary.
        let N = 4, C = 3, V = 7, R = 2
        let x = Buf(randomFloats(N * C, seed: 26)), weight = Buf(randomFloats(V * C, seed: 27))
        let rows: [Int32] = [0, 1, 3], targets: [Int32] = [2, 6, 0]
        let scratch = Buf(zeros: CrossEntropyHead.scratchCount(rowsPerChunk: R, C: C, V: V))
        let loss = { () -> Double in
            CrossEntropyHead.forward(nil, nil, nil, x.p, weight.p, rows, targets, 3, C, V, lossScale: 0,
                                     scratch: scratch.p, rowsPerChunk: R) / 3
        }
        let dx = Buf(zeros: x.count), dw = Buf(zeros: weight.count)
        _ = CrossEntropyHead.forward(dx.p, dw.p, nil, x.p, weight.p, rows, targets, 3, C, V, lossScale: 1.0 / 3,
                                     scratch: scratch.p, rowsPerChunk: R)
        expectGradient(dx.array, numericGradient(x.p, x.count, eps: 1e-3, loss), "cross-entropy dx")
        expectGradient(dw.array, numericGradient(weight.p, weight.count, eps: 1e-3, loss), "cross-entropy dweight")
    }

    @Test func dropout() {
        let n = 64
        let x = Buf(randomFloats(n, seed: 28))
        let w = randomFloats(n, seed: 29)
        let out = Buf(zeros: n)
        let key = CounterRandom.key(7, 3)
        let rowKeys: [UInt64] = [11, 12, 13, 14]
        var bits = [UInt32](repeating: 0, count: 4 * Dropout.wordsPerRow(n / 4))
        let loss = { () -> Double in
            Dropout.forward(out.p, &bits, x.p, rowKeys, 4, n / 4, p: 0.25, key: key)
            return weightedSum(out.p, w)
        }
        _ = loss()
        let dx = Buf(zeros: n)
        Dropout.backward(dx.p, w, bits, 4, n / 4, p: 0.25)
        expectGradient(dx.array, numericGradient(x.p, n, eps: 1e-3, loss), "dropout dx")
        _ = loss()
        let dropped = out.array.filter { $0 == 0 }.count
        #expect(dropped > 4 && dropped < 32, "dropped \(dropped) of \(n) at p = 0.25")
    }
}

extension Optional where Wrapped == [Int32] {
    /// Calls `body` with a pointer to the array's storage, or nil.
    func withOptionalPointer<R>(_ body: (UnsafePointer<Int32>?) -> R) -> R {
        switch self {
        case .some(let a): return a.withUnsafeBufferPointer { body($0.baseAddress) }
        case .none: return body(nil)
        }
    }
}
