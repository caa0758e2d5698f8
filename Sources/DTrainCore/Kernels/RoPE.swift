import Foundation

/// Rotary position embedding in Hugging Face's rotate-half layout: within each head of HD
/// dims, element i pairs with element i + HD/2.
public enum RoPE {
    /// cos and sin tables, each (maxPositions, HD/2), computed in float32 as transformers does
    /// (inv_freq = 1 / theta^(2i/HD); angle = position · inv_freq).
    public static func makeTables(maxPositions: Int, headDim: Int, theta: Float) -> (cos: [Float], sin: [Float]) {
        let half = headDim / 2
        var cosT = [Float](repeating: 0, count: maxPositions * half)
        var sinT = [Float](repeating: 0, count: maxPositions * half)
        for i in 0..<half {
            let invFreq = Float(1) / powf(theta, Float(2 * i) / Float(headDim))
            for p in 0..<maxPositions {
                let angle = Float(p) * invFreq
                cosT[p * half + i] = cosf(angle)
                sinT[p * half + i] = sinf(angle)
            }
        }
        return (cosT, sinT)
    }

    /// Rotates x (N, H·HD) in place; positions (N); cos, sin (maxPositions, HD/2).
    public static func forward(_ x: UnsafeMutablePointer<Float>, _ positions: UnsafePointer<Int32>,
                               _ cosT: UnsafePointer<Float>, _ sinT: UnsafePointer<Float>,
                               _ N: Int, _ H: Int, _ HD: Int) {
        rotate(x, positions, cosT, sinT, N, H, HD, sign: 1)
    }

    /// Turns dx (N, H·HD), the gradient w.r.t. the rotated values, into the gradient w.r.t. the
    /// unrotated ones, in place (the rotation's transpose is the rotation by -angle).
    public static func backward(_ dx: UnsafeMutablePointer<Float>, _ positions: UnsafePointer<Int32>,
                                _ cosT: UnsafePointer<Float>, _ sinT: UnsafePointer<Float>,
                                _ N: Int, _ H: Int, _ HD: Int) {
        rotate(dx, positions, cosT, sinT, N, H, HD, sign: -1)
    }

    @inline(__always)
    static func rotate(_ x: UnsafeMutablePointer<Float>, _ positions: UnsafePointer<Int32>,
                       _ cosT: UnsafePointer<Float>, _ sinT: UnsafePointer<Float>,
                       _ N: Int, _ H: Int, _ HD: Int, sign: Float) {
        let half = HD / 2
        for n in 0..<N {
            let c = cosT + Int(positions[n]) * half, s = sinT + Int(positions[n]) * half
            for h in 0..<H {
                let v = x + n * H * HD + h * HD
                for i in 0..<half {
                    let a = v[i], b = v[i + half], sn = sign * s[i]
                    v[i] = a * c[i] - b * sn
                    v[i + half] = b * c[i] + a * sn
                }
            }
        }
    }
}
