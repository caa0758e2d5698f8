import DTrainCore
import DTrainTestSupport
import Testing

/// Deterministic pseudo-random values in [-scale, scale).
func randomFloats(_ n: Int, seed: UInt64, scale: Float = 1) -> [Float] {
    let key = CounterRandom.key(seed)
    return (0..<n).map { (2 * CounterRandom.uniform(key, $0) - 1) * scale }
}

/// A heap buffer of floats, so that a loss closure can read what the finite-difference loop writes
/// (an inout array would be an exclusivity violation).
final class Buf {
    let p: UnsafeMutablePointer<Float>
    let count: Int
    init(_ values: [Float]) {
        count = values.count
        p = .allocate(capacity: max(count, 1))
        p.initialize(from: values, count: count)
    }
    convenience init(zeros n: Int) { self.init([Float](repeating: 0, count: n)) }
    var array: [Float] { Array(UnsafeBufferPointer(start: p, count: count)) }
    deinit { p.deallocate() }
}

/// Central finite differences of `loss` with respect to each of the `count` floats at `x`.
/// The loss is evaluated in Double from float32 kernels, so eps is chosen large enough that
/// float32 rounding stays well below the step's effect.
func numericGradient(_ x: UnsafeMutablePointer<Float>, _ count: Int, eps: Float = 1e-2,
                     _ loss: () -> Double) -> [Float] {
    var g = [Float](repeating: 0, count: count)
    for i in 0..<count {
        let saved = x[i]
        x[i] = saved + eps
        let up = loss()
        x[i] = saved - eps
        let down = loss()
        x[i] = saved
        g[i] = Float((up - down) / Double(2 * eps))
    }
    return g
}

/// Σ out·w in Double: a scalar loss whose gradient w.r.t. out is w.
func weightedSum(_ out: UnsafePointer<Float>, _ w: [Float]) -> Double {
    var s = 0.0
    for i in 0..<w.count { s += Double(out[i]) * Double(w[i]) }
    return s
}

/// Expects an analytic gradient to match finite differences within `tolerance` relative to its
/// largest magnitude, reporting the numbers.
func expectGradient(_ analytic: [Float], _ numeric: [Float], _ label: String, tolerance: Double = 2e-3) {
    let c = compare(analytic, numeric, label: label)
    #expect(c.shapeMatches && c.maxRelToScale <= tolerance, "\(c)")
    #expect(numeric.contains { $0 != 0 }, "\(label): numeric gradient is all zero, so the check would prove nothing")
}
