import DTrainTestSupport
import Foundation
import Testing
@testable import DTrainCore

/// AdamW's vectorised update against the plain per-element formula.
struct AdamWTests {
    /// The eight-lane loop, its split across threads and its scalar tail give the same bits as
    /// the formula applied one element at a time, for lengths with and without a tail, too short
    /// for one vector, and long enough to be split (65536 elements per thread at least).
    @Test(arguments: [0, 5, 8, 13, 200_003])
    func vectorisedUpdateEqualsTheFormulaBitForBit(count: Int) {
        let hyper = AdamWHyper(beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1)
        let lr: Float = 3e-3, t = 3, gradScale: Float = 0.5
        let grads = randomFloats(count, seed: 90), params0 = randomFloats(count, seed: 91)
        let m0 = randomFloats(count, seed: 92), v0 = randomFloats(count, seed: 93).map { $0 * $0 }

        // The formula, element by element, as torch.optim.AdamW states it.
        var expected = params0, em = m0, ev = v0
        let bc1 = 1 - Float(pow(Double(hyper.beta1), Double(t)))
        let bc2Sqrt = Float((1 - pow(Double(hyper.beta2), Double(t))).squareRoot())
        for i in 0..<count {
            let g = grads[i] * gradScale
            em[i] = hyper.beta1 * em[i] + (1 - hyper.beta1) * g
            ev[i] = hyper.beta2 * ev[i] + (1 - hyper.beta2) * g * g
            expected[i] = expected[i] * (1 - lr * hyper.weightDecay) - lr / bc1 * em[i] / (ev[i].squareRoot() / bc2Sqrt + hyper.eps)
        }

        let saved = Parallel.team
        defer { Parallel.team = saved }
        for threads in [1, 2, 3] {
            Parallel.team = threads > 1 ? ComputeTeam(size: threads) : nil
            var params = params0, m = m0, v = v0
            params.withUnsafeMutableBufferPointer { p in
                m.withUnsafeMutableBufferPointer { mb in
                    v.withUnsafeMutableBufferPointer { vb in
                        grads.withUnsafeBufferPointer { g in
                            AdamW.step(p.baseAddress!, mb.baseAddress!, vb.baseAddress!, g.baseAddress!, count,
                                       lr: lr, hyper: hyper, t: t, gradScale: gradScale)
                        }
                    }
                }
            }
            let label = "\(count) parameters, \(threads) thread(s)"
            for (name, actual, want) in [("params", params, expected), ("m", m, em), ("v", v, ev)] {
                let diff = compare(actual, want, label: "\(name), \(label)")
                #expect(diff.maxAbs == 0, "\(diff)")
            }
        }
    }
}
